"""Flow items with other units: copy a flow-item folder (units, mel, x-vector per clip) with each clip's units
replaced by those of another tokenizer, so a new tokenizer can be gated without recomputing mels and x-vectors.

The item order of a flow-item folder is the manifest's order of the clips that had units (``write_flow_items``);
each item's old units are checked against ``--old-units`` to confirm the order. New units whose length differs
from the old by more than one unit are refused; one unit more or less is trimmed or padded with the last unit.

    .venv/bin/python recipes/flow_items_swap.py --items outputs/mouth_gate/flow_items \
        --manifest outputs/mouth_gate/corpus/manifest.jsonl --old-units outputs/mouth_gate/corpus/units \
        --new-units outputs/ctc_units/units/train --out outputs/ctc_units/flow_items
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgm_omni.training.shards import ShardDataset, ShardWriter  # noqa: E402
from mgm_omni.training.speechlm_rows import read_jsonl  # noqa: E402
from mgm_omni.training.unit_shards import read_units  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--old-units", type=Path, required=True)
    ap.add_argument("--new-units", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    items = ShardDataset(args.items)
    old = read_units(args.old_units)
    new: dict[str, np.ndarray] = {}
    for folder in args.new_units:
        new.update(read_units(folder))
    ids = [r["id"] for r in read_jsonl(args.manifest) if r.get("split", "train") == "train" and r["id"] in old]
    k = 0
    with ShardWriter(args.out, length_field="mel") as writer:
        for item_id in ids:
            if k >= len(items):
                break
            item = items[k]
            if not np.array_equal(item["units"].numpy(), old[item_id]):
                continue  # skipped by write_flow_items (lengths disagreed)
            u = new[item_id]
            n = len(old[item_id])
            if abs(len(u) - n) > 1:
                raise SystemExit(f"{item_id}: {len(u)} new units for {n} old ones")
            u = np.concatenate([u, np.repeat(u[-1:], max(0, n - len(u)))])[:n].astype(np.int32)
            writer.add({"units": u, "mel": item["mel"].numpy(), "xvector": item["xvector"].numpy()})
            k += 1
    if k != len(items):
        raise SystemExit(f"matched {k} of {len(items)} flow items")
    print(f"{k} flow items written to {args.out}")


if __name__ == "__main__":
    main()
