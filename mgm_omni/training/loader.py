"""DataLoader construction and the padding collate for variable-length items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from mgm_omni.training.config import LoaderConfig
from mgm_omni.training.sampler import BucketedBatchSampler


class PadCollate:
    """Pads each field of a list of ``{field: (T_i, ...)}`` items along the first axis and stacks them.

    Returns ``{field: (B, T_max, ...)}`` plus ``{field + "_lengths": (B,) int64}``. Picklable, so it
    works with spawned DataLoader workers.

    Args:
        pad_values: padding value per field (e.g. ``{"labels": -100}``); others pad with 0.
    """

    def __init__(self, pad_values: Mapping[str, float] | None = None):
        self.pad_values = dict(pad_values or {})

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for field in items[0]:
            seqs = [item[field] for item in items]
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
            first = seqs[0]
            batch = first.new_full(
                (len(seqs), int(lengths.max()), *first.shape[1:]), self.pad_values.get(field, 0)
            )
            for b, s in enumerate(seqs):
                batch[b, : len(s)] = s
            out[field] = batch
            out[f"{field}_lengths"] = lengths
        return out


def build_loader(
    dataset: Dataset,
    batch_sampler: BucketedBatchSampler,
    collate_fn,
    cfg: LoaderConfig,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over ``batch_sampler`` with ``cfg.num_workers`` workers (kept alive across epochs).

    The loader gets its own generator so creating an iterator (each epoch, or on resume) does not draw
    from the global torch RNG: otherwise dropout masks after a resume would differ from an unbroken run.
    Worker seeds follow from ``seed``, but RNG states inside workers are not part of exact resume: derive
    any random augmentation from the item index and epoch instead.
    """
    workers = cfg.num_workers > 0
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.persistent_workers and workers,
        prefetch_factor=cfg.prefetch_factor if workers else None,
        pin_memory=cfg.pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
