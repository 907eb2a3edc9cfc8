"""Pre-tokenised shards: ``.npy`` arrays plus a JSON index, read memory-mapped.

An item is a dict of named arrays (``input_ids``, ``labels``, ``speech_tokens`` of shape (T, 4), ...).
Each field's items are concatenated along their first axis into ``shard-XXXXX.<field>.npy`` with an
offsets file ``shard-XXXXX.<field>.offsets.npy`` (num_items + 1 int64). ``lengths.npy`` holds each item's
length in the ``length_field`` so a sampler can batch without opening the shards. ``index.json`` is
written last, atomically: a folder without it is an unfinished write.

Layout::

    index.json   lengths.npy   shard-00000.input_ids.npy   shard-00000.input_ids.offsets.npy   ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

INDEX = "index.json"
LENGTHS = "lengths.npy"
FORMAT_VERSION = 1


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


class ShardWriter:
    """Writes items into shards of ``items_per_shard``; use as a context manager or call :meth:`close`.

    The first item fixes the fields, their dtypes and trailing shapes; later items must match.
    ``length_field`` (default: the first field) is the one whose first-axis size counts as the length.
    """

    def __init__(
        self, out_dir: str | os.PathLike, items_per_shard: int = 10_000, length_field: str | None = None
    ):
        if items_per_shard <= 0:
            raise ValueError("items_per_shard must be > 0")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / INDEX).exists():
            raise FileExistsError(f"{self.out_dir}: already holds shards ({INDEX})")
        self.items_per_shard = items_per_shard
        self.length_field = length_field
        self.fields: dict[str, dict[str, Any]] | None = None
        self._pending: list[dict[str, np.ndarray]] = []
        self._shards: list[dict[str, Any]] = []
        self._lengths: list[int] = []

    def add(self, item: Mapping[str, Any]) -> None:
        arrays = {k: np.atleast_1d(np.asarray(v)) for k, v in item.items()}
        if self.fields is None:
            self.fields = {k: {"dtype": a.dtype.str, "shape": list(a.shape[1:])} for k, a in arrays.items()}
            self.length_field = self.length_field or next(iter(arrays))
            if self.length_field not in arrays:
                raise KeyError(f"length_field {self.length_field!r} is not a field of the first item")
        if set(arrays) != set(self.fields):
            raise ValueError(f"item fields {sorted(arrays)} differ from {sorted(self.fields)}")
        for k, a in arrays.items():
            spec = self.fields[k]
            if a.dtype.str != spec["dtype"] or list(a.shape[1:]) != spec["shape"]:
                raise ValueError(
                    f"field {k!r}: got {a.dtype} {a.shape}, expected {spec['dtype']} (T, *{spec['shape']})"
                )
        self._pending.append(arrays)
        self._lengths.append(len(arrays[self.length_field]))
        if len(self._pending) == self.items_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = _shard_name(len(self._shards))
        for k in self.fields:
            parts = [item[k] for item in self._pending]
            offsets = np.zeros(len(parts) + 1, dtype=np.int64)
            np.cumsum([len(p) for p in parts], out=offsets[1:])
            np.save(self.out_dir / f"{name}.{k}.npy", np.concatenate(parts, axis=0))
            np.save(self.out_dir / f"{name}.{k}.offsets.npy", offsets)
        self._shards.append({"name": name, "num_items": len(self._pending)})
        self._pending = []

    def close(self) -> Path:
        """Flush the last shard and write the lengths and the index; returns the index path."""
        self._flush()
        np.save(self.out_dir / LENGTHS, np.asarray(self._lengths, dtype=np.int64))
        index = {
            "version": FORMAT_VERSION,
            "num_items": len(self._lengths),
            "length_field": self.length_field,
            "fields": self.fields or {},
            "shards": self._shards,
        }
        tmp = self.out_dir / f".{INDEX}.tmp"
        tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out_dir / INDEX)
        return self.out_dir / INDEX

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()


class ShardDataset(torch.utils.data.Dataset):
    """Map-style dataset over a shard folder; item ``i`` is ``{field: tensor of shape (T, *shape)}``.

    Arrays are opened memory-mapped on first access in each process (DataLoader workers open their own;
    pickling the dataset sends only the path), and each item is copied out of the map.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index_path = self.path / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(f"{self.path}: no {INDEX} (not a shard folder, or an unfinished write)")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        if self.index.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: shard format version {self.index.get('version')}, expected 1")
        self.fields = list(self.index["fields"])
        counts = [s["num_items"] for s in self.index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (num_shards + 1,)
        self.lengths = np.load(self.path / LENGTHS)  # (N,) int64, small: read fully
        self._maps: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.index["num_items"])

    def _arrays(self, shard: int, field: str) -> tuple[np.ndarray, np.ndarray]:
        key = (shard, field)
        if key not in self._maps:
            name = self.index["shards"][shard]["name"]
            data = np.load(self.path / f"{name}.{field}.npy", mmap_mode="r")
            offsets = np.load(self.path / f"{name}.{field}.offsets.npy")
            self._maps[key] = (data, offsets)
        return self._maps[key]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        i = int(i) % len(self)
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        local = i - int(self._starts[shard])
        out = {}
        for field in self.fields:
            data, offsets = self._arrays(shard, field)
            out[field] = torch.from_numpy(np.array(data[offsets[local] : offsets[local + 1]]))
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # each process maps the files itself
        return state
