"""Diagnostic: do the SpeechLM's units say the right phonemes? Which half of the mouth loses the words.

The mouth's end-to-end WER mixes the SpeechLM (text -> units) and the flow (units -> mel). This reads units with
the CTC phoneme probe of ``recipes/mouth_unit_probe.py --save`` (trained on true units of the corpus), so the
SpeechLM is judged without the flow:

* ``generated``: the units the mouth's SpeechLM writes for the evaluation sentences, cloning the evaluation's
  prompt clips (as ``recipes/mouth_eval.py`` does: dev speakers, sentences never trained on);
* ``source``: the units of the same sentences spoken by the source voice itself (the unit tokenizer on the audio).

Phoneme error rate (greedy CTC, edit distance / reference phonemes of the text's G2P) for both. ``generated``
near ``source``: the SpeechLM writes the right sounds and the flow loses them; far above: the SpeechLM.

    .venv/bin/python recipes/mouth_unit_probe.py --units /work/corpus/units --lang en --minutes 12 \
        --save outputs/unit_probe/probe_en.pt
    .venv/bin/python recipes/mouth_speechlm_phones.py --probe outputs/unit_probe/probe_en.pt \
        [--model mgm_omni/hub/assets/mouth] [--report outputs/mouth_eval/report.json] [--n 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.mouth_unit_probe import phone_reader  # noqa: E402


def split_items(rows: list[dict], split: str) -> list[dict]:
    """EN utterances of 2-8 s of ``split``, one per speaker in turn, each with another 3-15 s clip of its speaker."""
    pool = [r for r in rows if r.get("split") == split and r["lang"] == "en" and r.get("kind") == "utterance"]
    by_speaker: dict[str, list[dict]] = {}
    for r in sorted(pool, key=lambda r: r["id"]):
        by_speaker.setdefault(r["speaker"], []).append(r)
    items, turn = [], 0
    while any(len(v) > turn for v in by_speaker.values()) and turn < 50:
        for clips in by_speaker.values():
            if len(clips) <= turn or not 2.0 <= clips[turn]["duration"] <= 8.0:
                continue
            prompt = next((c for c in clips if c is not clips[turn] and 3.0 <= c["duration"] <= 15.0), None)
            if prompt is not None:
                items.append({"id": clips[turn]["id"], "text": clips[turn]["text"], "prompt_id": prompt["id"]})
        turn += 1
    return items


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", type=Path, required=True)
    ap.add_argument("--model", default="mgm_omni/hub/assets/mouth")
    ap.add_argument("--report", type=Path, default=ROOT / "outputs" / "mouth_eval" / "report.json",
                    help="a mouth_eval report: its items (sentence, source clip, prompt clip) are reused")
    ap.add_argument("--manifest", type=Path, default=Path("/work/corpus/manifest.jsonl"))
    ap.add_argument("--split", default=None,
                    help="take the sentences from this manifest split instead of the report (e.g. train: sentences "
                         "and voices the SpeechLM was trained on), each cloning another clip of its speaker")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "unit_probe" / "speechlm_phones.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mgm_omni.audio import load_audio
    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.generation.voice import Voice
    from mgm_omni.generation.wave.frontends import voice_frontend
    from mgm_omni.generation.wave.own_frontend import load_unit_tokenizer

    read = phone_reader(args.probe)
    rows = {}
    for line in args.manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["id"]] = {**row, "path": str(args.manifest.parent / row["audio"])}
    if args.split is None:
        items = [it for it in json.loads(args.report.read_text(encoding="utf-8"))["items"] if it["lang"] == "en"]
    else:
        items = split_items(list(rows.values()), args.split)
    items = items[:args.n]
    pipe = TTSPipeline.load(args.model, temperature=args.temperature, top_k=args.top_k, seed=0,
                            max_rows=400)
    frontend = voice_frontend(pipe.mouth, args.model)
    units_of = load_unit_tokenizer(Path(args.model) / "units")
    totals = {"generated": [0, 0], "source": [0, 0]}
    records = []
    for it in items:
        prompt = rows[it["prompt_id"]]
        pipe.voice = Voice.from_audio(prompt["path"], prompt["text"], frontend)
        generated: list[int] = []
        for _ in pipe.stream(it["text"], on_row=lambda r: generated.extend(r.tokens)):
            pass
        source = units_of(load_audio(rows[it["id"]]["path"], sample_rate=16000, max_seconds=None)[0]).tolist()
        rec = {"id": it["id"], "text": it["text"]}
        for name, units in (("generated", generated), ("source", source)):
            errors, rec["phones"] = read(units, it["text"])
            totals[name][0] += errors
            totals[name][1] += rec["phones"]
            rec[name] = {"units": len(units), "errors": errors}
        records.append(rec)
        print(f"{it['id']}: phones {rec['phones']}, generated {rec['generated']['errors']} errors "
              f"({len(generated)} units), source {rec['source']['errors']} ({len(source)} units)", flush=True)
    report = {"model": args.model, "probe": str(args.probe), "items": len(records),
              "per": {k: round(v[0] / max(1, v[1]), 4) for k, v in totals.items()}, "records": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report["per"]))
    return report


if __name__ == "__main__":
    main()
