"""Probe: does a SpeechLM being trained read its text? Greedy voice-cloned decodes of held-out items, by length.

A model that has learnt the text-to-speech alignment writes about as many units as the source audio has
(25 per second) and ends every chunk with eos; one that has not writes a fixed length, stops at once, or
runs on until a safeguard closes the chunk. For each item (``--split``, ``--lang``; an utterance) and another
item of the same speaker as the reference prompt (3-10 s), this prints the source and decoded unit counts,
their ratio and how decoding ended; the summary line gives the median ratio and the share of clean ends.
``--heldout N`` also lays out N items of the split as training sequences and prints the teacher-forced speech
loss and unit accuracy on them (the held-out counterpart of the training loss, independent of any vocoder),
the accuracy by row position since the target's first speech row, and with ``--wrong-text`` the loss of the
same units laid out with another item's text: the gap between the two is how much the model reads its text.
``--phone-probe FILE`` (``recipes/mouth_unit_probe.py --save``) also reads the teacher-forced top-1 units with
that CTC phoneme probe: their phoneme error rate against the true units' says whether the model knows which
sounds its text makes, apart from how its free-running decode drifts.

    python recipes/speechlm_probe.py --config recipes/configs/speechlm_stage1_small.yaml [--checkpoint DIR]
    python recipes/speechlm_probe.py --model outputs/speechlm_stage1_small/model --config ...

``--checkpoint`` (default: the newest checkpoint of the config's ``train.out_dir``) is exported to a
temporary directory first; ``--model`` reads an exported directory. Text and units come from the config's
``data`` section (its first manifest, units next to it). One CPU thread; no file is written.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.speech.generator import SpeechGenerator, SpeechRequest
from mgm_omni.generation.speech.layout import IGNORE, ChunkRules, LayoutError, RowLayout, SpecialIds
from mgm_omni.hub.own_mouth import silence_codes
from mgm_omni.models.speech_lm import SpeechLM
from mgm_omni.models.unit_tokenizer import WhisperUnitTokenizer
from mgm_omni.text import load_text_frontend
from mgm_omni.training.checkpointing import latest_checkpoint
from mgm_omni.training.config import TrainConfig, from_dict
from mgm_omni.training.recipe_config import load_recipe_config
from mgm_omni.training.speechlm_rows import SequenceSpec, build_sequence, read_jsonl
from mgm_omni.training.speechlm_setup import SpeechLMDataSection, SpeechLMModelSection, export_speech_lm
from mgm_omni.training.unit_shards import read_units

UNIT_TOKENIZER = "outputs/speech_tokenizer/unit_tokenizer.safetensors"


def pick_items(manifest: str, split: str, lang: str, n: int, seed: int) -> list[tuple[dict, dict]]:
    """``n`` (target, reference) utterance pairs of one split and language, the reference another item of the
    target's speaker of 3-10 s."""
    rows = [r for r in read_jsonl(manifest) if r.get("split") == split and r.get("lang") == lang
            and r.get("kind", "utterance") == "utterance"]
    if not rows:
        raise SystemExit(f"no {lang} utterance in split {split!r} of {manifest}")
    rng = random.Random(seed)
    targets = rng.sample(rows, min(n, len(rows)))
    out = []
    for t in targets:
        refs = [r for r in rows if r["speaker"] == t["speaker"] and r["id"] != t["id"] and 3 <= r["duration"] <= 10]
        if refs:
            out.append((t, rng.choice(refs)))
    return out


POSITION_EDGES = (8, 25, 50, 100, 200)  # buckets of rows since the target's first speech row
POSITION_NAMES = ("0-8", "8-25", "25-50", "50-100", "100-200", "200-")


def heldout_loss(model: SpeechLM, frontend, data: SpeechLMDataSection, pairs: list[tuple[dict, dict]],
                 units: dict, wrong_text: bool = False, read_phones=None) -> dict:
    """Teacher-forced speech cross-entropy and top-1 unit accuracy over held-out sequences (fp32).

    Accuracy is also given by row position since the target's first speech row (``by_position``). With
    ``wrong_text`` every target is laid out a second time with the text of another item of the list (its own
    units kept): a model that reads its text loses clearly more there (``wrong_text_loss``); one that has not
    learnt the alignment predicts the units from their own history alone and loses about the same.

    ``read_phones(units, text) -> (errors, phonemes)`` (a CTC phoneme probe, ``--phone-probe``) also reads the
    teacher-forced top-1 units of each target (``argmax_per``) and its true units (``source_per``): a model that
    knows which sounds its text makes is near the source even when its free-running decode drifts.
    """
    spec = SequenceSpec(ChunkRules(sentence_min_text=data.sentence_min_text, max_text=data.max_text),
                        data.max_rows, data.filler_unit, data.unit_rate, data.max_reference_units)
    layout = RowLayout(SpecialIds.from_tokenizer(frontend, model.cfg), model.cfg.speech_token_count,
                       model.cfg.delay_rows)

    def score(target: dict, ref: dict, text_of: dict):
        rows, labels = build_sequence(layout, frontend, model.cfg, {**target, "text": text_of["text"]},
                                      units[target["id"]], ref, units[ref["id"]], spec)
        _, g = model(rows[None])
        logits = model.speech_logits(g)[0, :-1].float()  # (T-1, k, S)
        gold = labels[1:, 1:]
        keep = gold != IGNORE
        labelled = keep.any(-1).nonzero().flatten()  # prompt rows are never labelled
        target_start = int(labelled[0]) if len(labelled) else 0
        nll = torch.nn.functional.cross_entropy(logits[keep], gold[keep], reduction="sum")
        hit = (logits.argmax(-1) == gold) & keep
        codes = keep & (gold < model.cfg.speech_eos)
        top1 = logits[..., :model.cfg.speech_eos].argmax(-1)[codes].tolist()
        return float(nll), hit, keep, target_start, (top1, gold[codes].tolist())

    totals = {"nll": 0.0, "hits": 0, "count": 0, "wrong_nll": 0.0, "wrong_count": 0}
    phone_errors = {"argmax": 0, "source": 0, "phonemes": 0}
    hits_at, labels_at = torch.zeros(len(POSITION_NAMES)), torch.zeros(len(POSITION_NAMES))
    edges = torch.tensor(POSITION_EDGES)
    with torch.no_grad():
        for i, (target, ref) in enumerate(pairs):
            try:
                nll, hit, keep, start, (top1, true_units) = score(target, ref, target)
            except LayoutError:
                continue
            if read_phones is not None:
                errors, n = read_phones(top1, target["text"])
                phone_errors["argmax"] += errors
                phone_errors["source"] += read_phones(true_units, target["text"])[0]
                phone_errors["phonemes"] += n
            totals["nll"] += nll
            totals["hits"] += int(hit.sum())
            totals["count"] += int(keep.sum())
            bucket = torch.bucketize(torch.arange(keep.shape[0]) - start, edges, right=True)
            hits_at.index_add_(0, bucket, hit.sum(-1).float())
            labels_at.index_add_(0, bucket, keep.sum(-1).float())
            if wrong_text:
                other = pairs[(i + 1) % len(pairs)][0]
                try:
                    wrong, _, wkeep, _, _ = score(target, ref, other)
                except LayoutError:
                    continue
                totals["wrong_nll"] += wrong
                totals["wrong_count"] += int(wkeep.sum())
    out = {"speech_loss": totals["nll"] / max(totals["count"], 1),
           "unit_accuracy": totals["hits"] / max(totals["count"], 1), "labels": totals["count"],
           "by_position": {name: round(float(h / n), 3)
                           for name, h, n in zip(POSITION_NAMES, hits_at, labels_at) if n}}
    if wrong_text:
        out["wrong_text_loss"] = totals["wrong_nll"] / max(totals["wrong_count"], 1)
    if read_phones is not None:
        out["argmax_per"] = round(phone_errors["argmax"] / max(phone_errors["phonemes"], 1), 4)
        out["source_per"] = round(phone_errors["source"] / max(phone_errors["phonemes"], 1), 4)
    return out


def phone_reader(probe_file: str):
    """``read(units, text) -> (errors, phonemes)`` with a saved CTC phoneme probe (``mouth_unit_probe.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recipes.mouth_unit_probe import phone_reader as reader

    return reader(probe_file)


def load_model(args, raw: dict) -> SpeechLM:
    if args.model:
        return SpeechLM.from_pretrained(args.model)
    out_dir = from_dict(TrainConfig, raw["train"]).out_dir
    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(out_dir)
    if ckpt is None:
        raise SystemExit(f"no checkpoint in {out_dir}")
    section = from_dict(SpeechLMModelSection, raw["model"])
    cfg = (SpeechLMConfig.from_dict(dict(section.config), strict=True) if section.config is not None
           else SpeechLMConfig.from_json_file(Path(section.init) / "config.json"))
    with tempfile.TemporaryDirectory() as tmp:
        export_speech_lm(cfg, ckpt, tmp)
        print(f"checkpoint {ckpt}", file=sys.stderr)
        return SpeechLM.from_pretrained(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model")
    parser.add_argument("--checkpoint")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unit-tokenizer", default=UNIT_TOKENIZER, help="its silence code ends chunks")
    parser.add_argument("--heldout", type=int, default=0, help="items for the teacher-forced held-out loss")
    parser.add_argument("--wrong-text", action="store_true",
                        help="also score each held-out item laid out with another item's text")
    parser.add_argument("--phone-probe", help="a CTC phoneme probe (mouth_unit_probe.py --save): also the phoneme "
                        "error rate of the held-out items' teacher-forced top-1 units (English items)")
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = load_recipe_config(args.config, args.overrides, ("train", "model", "data"))
    data = from_dict(SpeechLMDataSection, raw["data"])
    model = load_model(args, raw).eval()
    frontend = load_text_frontend(data.text_frontend, data.frontend_kind, ".", data.g2p)
    manifest = data.manifests[0]
    units = read_units(data.units[0] if data.units else Path(manifest).parent / "units")
    silence, blank = silence_codes(WhisperUnitTokenizer.from_file(args.unit_tokenizer))
    mouth = MouthSpec(text_frontend=data.frontend_kind, speech_codes=model.cfg.speech_eos, silence_code=silence,
                      blank_codes=frozenset(blank), delay_rows=model.cfg.delay_rows, dtype="float32")
    gen = SpeechGenerator(model, frontend, DecodeConfig(sampling=SamplingConfig(temperature=0.0)), pack=False,
                          native=False, mouth=mouth)
    if args.heldout:
        pairs = pick_items(manifest, args.split, args.lang, args.heldout, args.seed + 1)
        scores = heldout_loss(model, frontend, data, pairs, units, args.wrong_text,
                              phone_reader(args.phone_probe) if args.phone_probe else None)
        print(json.dumps({"heldout": len(pairs), **scores}), flush=True)
    ratios, clean = [], 0
    for target, ref in pick_items(manifest, args.split, args.lang, args.items, args.seed):
        source = len(units[target["id"]])
        cap = max(64, int(3 * source / model.cfg.speech_token_count) + 64)
        t0 = time.perf_counter()
        res = gen.generate(SpeechRequest(target["text"], ref["text"], units[ref["id"]].tolist()),
                           DecodeConfig(sampling=SamplingConfig(temperature=0.0), max_new_rows=cap))
        ratio = len(res.tokens) / max(source, 1)
        ok = not res.tts_error and res.finish_reason not in (None, "length")
        ratios.append(ratio)
        clean += ok
        print(json.dumps({"id": target["id"], "source_units": source, "decoded_units": len(res.tokens),
                          "ratio": round(ratio, 2), "finish": res.finish_reason,
                          "abort": str(res.cause) if res.tts_error else None,
                          "seconds": round(time.perf_counter() - t0, 2), "text": target["text"][:60]}))
    if not ratios:
        return
    print(f"median length ratio {statistics.median(ratios):.2f} (1.0 = the source's length); "
          f"clean ends {clean}/{len(ratios)}", file=sys.stderr)


if __name__ == "__main__":
    main()
