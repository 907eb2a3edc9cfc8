"""Recipe step: a fixed subset of a corpus manifest for a short gate run (the corpus may still be growing).

    python recipes/mouth_subset.py --manifest /work/corpus/manifest.jsonl --out outputs/mouth_gate/corpus \
        --train-hours 3 --dev-speakers 60 --dev 30

Keeps utterances only: about ``train-hours`` of the train split (half English, half Mandarin, a seeded shuffle
over every speaker), and per language the first ``dev-speakers`` / ``dev`` items of the held-out speakers and
of the dev split. Audio paths are made absolute, so the unit shards and flow items can live next to the copy.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder of the subset's manifest.jsonl")
    p.add_argument("--train-hours", type=float, default=3.0)
    p.add_argument("--dev-speakers", type=int, default=60)
    p.add_argument("--dev", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    src = Path(args.manifest)
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind", "utterance") == "utterance"]
    random.Random(args.seed).shuffle(rows)
    budget = {"en": args.train_hours / 2 * 3600, "zh": args.train_hours / 2 * 3600}
    caps, taken, out = {"dev_speakers": args.dev_speakers, "dev": args.dev}, Counter(), []
    for r in rows:
        r["audio"] = str((src.parent / r["audio"]).resolve())
        if r["split"] == "train" and budget.get(r["lang"], 0) > 0:
            budget[r["lang"]] -= r["duration"]
            out.append(r)
        elif r["split"] in caps and taken[r["split"], r["lang"]] < caps[r["split"]]:
            taken[r["split"], r["lang"]] += 1
            out.append(r)
    out.sort(key=lambda r: r["id"])
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    hours = sum(r["duration"] for r in out if r["split"] == "train") / 3600
    print(f"{path}: {len(out)} items, train {hours:.2f} h, held out {dict(taken)}")
    return path


if __name__ == "__main__":
    main()
