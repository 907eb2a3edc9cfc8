"""Forced alignment of the corpus's texts to their units, for the SpeechLM's guided attention.

Each item of the given splits and language (``--lang``; the probe must be trained on that language): its G2P
phonemes are forced through the CTC phoneme probe of ``recipes/mouth_unit_probe.py --save`` (read on the
item's true units), each phoneme is given to the phoneme-BPE text id that spells it
(``mgm_omni.training.speechlm_align``), and the text-id index and the phoneme id (the probe's table, 1-based,
plus ``--phone-offset``) of every unit are saved (``alignments.npz``: item id -> int16 (units, 2)). Items whose
phonemes and text ids do not match one to one, or that the probe cannot align, are left out (the guide falls
back to its linear band). The summary compares the aligned text index with the linear guess (the difference
the guide will see).

    .venv/bin/python recipes/speechlm_align.py --probe outputs/unit_probe/probe_en.pt \
        --out outputs/speechlm_align/alignments.npz
    # both languages in one file: Mandarin phoneme ids after the English ones (phone_classes: the sum + 1)
    .venv/bin/python recipes/speechlm_align.py --probe outputs/unit_probe/probe_zh.pt --lang zh \
        --phone-offset 110 --merge outputs/speechlm_align/alignments.npz --out outputs/speechlm_align/both.npz
Then train with ``data.alignments=<that file>`` and ``model.guide.weight=1.0`` (the rows are written again:
use a new ``data.shards`` folder); ``model.guide.phone_weight`` with ``model.guide.phone_classes`` (the probe's
phonemes + 1; printed here) adds the auxiliary phoneme loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.mouth_unit_probe import load_probe, phonemes  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, default=Path("/work/corpus/manifest.jsonl"))
    ap.add_argument("--units", type=Path, default=None, help="unit shards (default: <manifest dir>/units)")
    ap.add_argument("--text-frontend", default="outputs/text_frontend")
    ap.add_argument("--splits", default="train")
    ap.add_argument("--lang", default="en", help="en or zh: the items aligned (and the probe's language)")
    ap.add_argument("--phone-offset", type=int, default=0, help="added to the phoneme ids (another language's "
                    "phonemes come first in a merged file)")
    ap.add_argument("--merge", type=Path, default=None,
                    help="an alignments.npz of other items (e.g. the other language) to write out together")
    ap.add_argument("--limit", type=int, default=0, help="at most this many items (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "speechlm_align" / "alignments.npz")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mgm_omni.text import load_text_frontend
    from mgm_omni.text.g2p import G2P
    from mgm_omni.training.speechlm_align import ctc_forced_path, phone_counts, unit_labels
    from mgm_omni.training.speechlm_rows import read_jsonl
    from mgm_omni.training.unit_shards import read_units

    probe, table = load_probe(args.probe)
    frontend = load_text_frontend(args.text_frontend, "own-bpe", ".", None)
    g2p = G2P()
    units = read_units(args.units or args.manifest.parent / "units")
    splits = set(args.splits.split(","))
    items = [r for r in read_jsonl(args.manifest) if r.get("split") in splits and r.get("lang") == args.lang
             and r.get("kind", "utterance") == "utterance" and r["id"] in units]
    if args.limit:
        items = items[:args.limit]
    out: dict[str, np.ndarray] = {}
    skipped = {"phonemes != text ids": 0, "unknown phoneme": 0, "no path": 0}
    offsets = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for n, item in enumerate(items):
            phones = [table.get(p) for p in phonemes(g2p, item["text"])]
            if not phones or None in phones:
                skipped["unknown phoneme"] += 1
                continue
            counts = phone_counts(frontend, frontend.encode(item["text"]))
            if sum(counts) != len(phones):
                skipped["phonemes != text ids"] += 1
                continue
            label_text = np.repeat(np.arange(len(counts)), counts)
            u = torch.as_tensor(units[item["id"]], dtype=torch.long)
            logp = probe(u[None])[0]
            try:
                path = ctc_forced_path(logp, phones)
            except ValueError:
                skipped["no path"] += 1
                continue
            label = unit_labels(path, logp.shape[0] // len(u))
            index = label_text[label]
            out[item["id"]] = np.stack([index, np.asarray(phones)[label] + args.phone_offset], axis=1).astype(np.int16)
            linear = (np.arange(len(index)) + 0.5) * len(counts) / len(index)
            offsets.append(float(np.abs(index - linear).mean()))
            if n % 1000 == 0:
                print(f"{n}/{len(items)} items, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge is not None:
        with np.load(args.merge) as other:
            out = {**{key: other[key] for key in other.files}, **out}
    np.savez_compressed(args.out, **out)
    report = {"items": len(items), "aligned": len(out), "skipped": skipped, "phone_classes": args.phone_offset + len(table) + 1,
              "mean |aligned - linear| text ids": round(float(np.mean(offsets)), 2) if offsets else None,
              "seconds": round(time.perf_counter() - t0, 1), "out": str(args.out)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
