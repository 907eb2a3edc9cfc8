"""Data side of training: bucketed sampler, memory-mapped shards, padding collate, worker loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mgm_omni.training.config import LoaderConfig
from mgm_omni.training.loader import PadCollate, build_loader
from mgm_omni.training.sampler import BucketedBatchSampler
from mgm_omni.training.shards import ShardDataset, ShardWriter

LENGTHS = np.random.default_rng(0).integers(1, 60, size=203)


def _all_items(batches) -> list[int]:
    return sorted(int(i) for b in batches for i in b)


@pytest.mark.parametrize(
    "max_tokens,num_buckets,max_batch_size", [(64, 1, None), (120, 8, None), (300, 4, 5)]
)
def test_every_item_once_per_epoch_within_budget(max_tokens, num_buckets, max_batch_size):
    s = BucketedBatchSampler(LENGTHS, max_tokens, num_buckets, max_batch_size=max_batch_size, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert _all_items(batches) == list(range(len(LENGTHS)))
        for b in batches:
            assert len(b) * LENGTHS[b].max() <= max_tokens
            assert max_batch_size is None or len(b) <= max_batch_size
            assert len(set(s.bucket[b])) == 1  # one length bucket per batch


def test_order_is_deterministic_by_seed_and_epoch():
    a, b = BucketedBatchSampler(LENGTHS, 100, seed=1), BucketedBatchSampler(LENGTHS, 100, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 == list(b)
    a.set_epoch(0)
    assert epoch1 != list(a)
    assert list(a) != list(BucketedBatchSampler(LENGTHS, 100, seed=2))
    unshuffled = BucketedBatchSampler(LENGTHS, 100, shuffle=False)
    unshuffled.set_epoch(5)
    assert list(unshuffled) == list(BucketedBatchSampler(LENGTHS, 100, shuffle=False))


def test_buckets_cut_padding():
    def fill(num_buckets):
        s = BucketedBatchSampler(LENGTHS, 200, num_buckets, seed=0)
        return LENGTHS.sum() / sum(len(b) * LENGTHS[b].max() for b in s)

    assert fill(8) > fill(1) + 0.1


def test_ranks_get_disjoint_equal_shares_in_global_order():
    world = 3
    ranks = [BucketedBatchSampler(LENGTHS, 100, seed=4, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        shares = [list(s) for s in ranks]
        assert len({len(x) for x in shares}) == 1  # equal counts: no rank waits on a collective
        items = [set(i for b in x for i in b) for x in shares]
        assert all(not (items[i] & items[j]) for i in range(world) for j in range(i + 1, world))
        everything = ranks[0].global_batches(epoch)
        dropped = len(everything) % world
        assert sum(len(x) for x in items) == len(LENGTHS) - sum(
            len(b) for b in everything[len(everything) - dropped :]
        )
        # step k of rank r is global batch k * world + r
        assert all(shares[r][k] == everything[k * world + r].tolist() for r in range(world) for k in range(3))


def test_set_epoch_start_resumes_mid_epoch():
    s = BucketedBatchSampler(LENGTHS, 100, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == len(full) - 4


def test_too_long_item_is_refused():
    with pytest.raises(ValueError, match="longer than max_tokens"):
        BucketedBatchSampler([3, 500, 4], max_tokens=100)


def _write_items(path, n=25, per_shard=10):
    rng = np.random.default_rng(1)
    items = []
    with ShardWriter(path, items_per_shard=per_shard, length_field="input_ids") as w:
        for i in range(n):
            item = {
                "input_ids": rng.integers(0, 1000, size=rng.integers(1, 20)).astype(np.int32),
                "speech": rng.integers(0, 6561, size=(rng.integers(1, 9), 4)).astype(np.int16),  # (T, 4) rows
                "idx": np.int64(i),
            }
            w.add(item)
            items.append(item)
    return items


def test_shards_round_trip_memory_mapped(tmp_path):
    items = _write_items(tmp_path / "shards")
    ds = ShardDataset(tmp_path / "shards")
    assert len(ds) == 25 and len(ds.index["shards"]) == 3
    np.testing.assert_array_equal(ds.lengths, [len(it["input_ids"]) for it in items])
    for i in (0, 9, 10, 24, -1):
        got = ds[i]
        want = items[i]
        assert got["input_ids"].dtype == torch.int32 and got["speech"].shape[1:] == (4,)
        for k in ("input_ids", "speech"):
            np.testing.assert_array_equal(got[k].numpy(), want[k])
        assert got["idx"].tolist() == [int(want["idx"])]
    assert isinstance(ds._arrays(0, "input_ids")[0], np.memmap)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker gets: the path, not the maps
    assert clone._maps == {} and torch.equal(clone[7]["speech"], ds[7]["speech"])
    with pytest.raises(IndexError):
        ds[25]


def test_shard_writer_checks_fields_and_unfinished_folders(tmp_path):
    w = ShardWriter(tmp_path / "a")
    w.add({"ids": np.arange(3)})
    with pytest.raises(ValueError):
        w.add({"ids": np.arange(3, dtype=np.int8)})
    with pytest.raises(ValueError):
        w.add({"other": np.arange(3)})
    with pytest.raises(FileNotFoundError, match="unfinished"):
        ShardDataset(tmp_path / "a")  # no index yet
    w.close()
    assert len(ShardDataset(tmp_path / "a")) == 1
    with pytest.raises(FileExistsError):
        ShardWriter(tmp_path / "a")


def test_pad_collate():
    batch = PadCollate({"labels": -100})(
        [
            {"ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([4])},
            {"ids": torch.tensor([5]), "labels": torch.tensor([6, 7])},
        ]
    )
    assert batch["ids"].tolist() == [[1, 2, 3], [5, 0, 0]]
    assert batch["labels"].tolist() == [[4, -100], [6, 7]]
    assert batch["ids_lengths"].tolist() == [3, 1] and batch["labels_lengths"].tolist() == [1, 2]


def test_loader_with_persistent_workers_covers_each_epoch(tmp_path):
    _write_items(tmp_path / "shards", n=40, per_shard=16)
    ds = ShardDataset(tmp_path / "shards")
    sampler = BucketedBatchSampler(ds.lengths, max_tokens=40, num_buckets=3, seed=0)
    loader = build_loader(ds, sampler, PadCollate(), LoaderConfig(num_workers=2), seed=0)
    assert loader.persistent_workers and loader.num_workers == 2
    torch_state = torch.get_rng_state()
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = sorted(i for batch in loader for i in batch["idx"][:, 0].tolist())
        assert seen == list(range(40))
    assert torch.equal(torch.get_rng_state(), torch_state)  # the loader draws from its own generator
