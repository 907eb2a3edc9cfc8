"""Length-bucketed batch sampler: batches by a padded token budget, split across ranks, resumable.

Each epoch the items are shuffled by a generator seeded with ``(seed, epoch)`` (nothing global), grouped
into ``num_buckets`` length buckets (quantiles of the lengths), and cut greedily into batches whose padded
size ``len(batch) * max(lengths)`` stays within ``max_tokens``. The batch order is then shuffled, and rank
``r`` of ``W`` takes global batches ``r, r + W, r + 2W, ...``: step ``k`` of a ``W``-rank run sees the same
batches as step ``k`` of one process that accumulates ``W`` micro-batches. Trailing batches that would give
ranks unequal counts are dropped (every rank must run the same number of steps), so with ``W > 1`` an
item is seen at most once per epoch; with ``W = 1`` exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class BucketedBatchSampler:
    """Yields lists of dataset indices; pass it as ``DataLoader(batch_sampler=...)``.

    Args:
        lengths: per-item length in tokens or frames (what the budget counts).
        max_tokens: padded budget of one batch; an item longer than this raises ``ValueError``.
        num_buckets: length buckets; more buckets, less padding, less mixing of lengths.
        max_batch_size: optional cap on items per batch.
        shuffle: shuffle items and batches (deterministically by seed and epoch).
        seed: base seed of the data order.
        rank, world_size: this process's share of the batches.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        num_buckets: int = 8,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty 1-D sequence")
        if (self.lengths <= 0).any():
            raise ValueError("every length must be > 0")
        too_long = np.flatnonzero(self.lengths > max_tokens)
        if len(too_long):
            raise ValueError(
                f"{len(too_long)} items are longer than max_tokens={max_tokens} (first: index {too_long[0]}, "
                f"length {self.lengths[too_long[0]]}); filter them out or raise the budget"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        quantiles = np.linspace(0.0, 1.0, num_buckets + 1)[1:-1]
        edges = np.unique(np.quantile(self.lengths, quantiles)) if num_buckets > 1 else np.array([])
        self.bucket = np.searchsorted(edges, self.lengths, side="right")  # (N,) bucket id per item
        self.epoch = 0
        self.start = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Position the sampler: the next ``iter()`` yields this rank's batches of ``epoch`` from ``start``."""
        self.epoch = epoch
        self.start = start

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All batches of ``epoch`` in order, before the split across ranks."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        order = order[np.argsort(self.bucket[order], kind="stable")]  # by bucket, shuffled within
        batches: list[np.ndarray] = []
        first, longest = 0, 0
        for pos, (item, bucket) in enumerate(zip(order, self.bucket[order])):
            longest_with = max(longest, int(self.lengths[item]))
            count = pos - first
            if count and (
                bucket != self.bucket[order[first]]
                or longest_with * (count + 1) > self.max_tokens
                or (self.max_batch_size is not None and count == self.max_batch_size)
            ):
                batches.append(order[first:pos])
                first, longest_with = pos, int(self.lengths[item])
            longest = longest_with
        batches.append(order[first:])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (equal counts on every rank)."""
        batches = self.global_batches(epoch)
        usable = len(batches) // self.world_size * self.world_size
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.rank_batches(self.epoch)[self.start :]:
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches left in the current epoch from the current start."""
        return max(0, len(self.rank_batches(self.epoch)) - self.start)
