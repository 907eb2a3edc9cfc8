"""Speech-unit shards: the speech-tokenizer recipe writes them next to a manifest, the SpeechLM and flow
recipes read them by item id.

A folder holds :class:`~mgm_omni.training.shards.ShardWriter` shards with one field ``units`` ((T,) int32, 25 Hz)
and ``ids.json``, the manifest ids in shard order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgm_omni.training.shards import ShardDataset, ShardWriter

UNITS_FIELD = "units"
IDS_FILE = "ids.json"


def write_units(out: str | os.PathLike, ids: Sequence[str], units: Sequence[np.ndarray]) -> Path:
    """Write the units of ``ids`` (same order) into ``out``; returns the folder."""
    if len(ids) != len(units):
        raise ValueError(f"{len(ids)} ids for {len(units)} unit sequences")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    out = Path(out)
    with ShardWriter(out, length_field=UNITS_FIELD) as writer:
        for u in units:
            writer.add({UNITS_FIELD: np.asarray(u, dtype=np.int32)})
    (out / IDS_FILE).write_text(json.dumps(list(ids)), encoding="utf-8")
    return out


def read_units(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{item id: (T,) int32 units}`` of a folder written by :func:`write_units`."""
    folder = Path(folder)
    data = ShardDataset(folder)
    ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
    if len(ids) != len(data):
        raise ValueError(f"{folder}: {len(ids)} ids for {len(data)} shard items")
    return {item_id: data[i][UNITS_FIELD].numpy() for i, item_id in enumerate(ids)}
