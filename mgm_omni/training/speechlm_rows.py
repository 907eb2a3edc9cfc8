"""SpeechLM training sequences from a corpus: voice-cloning prompt rows, then the target in chunks (spec §5).

For each target item (an utterance, or a long-form item with per-sentence ``segments``) and a reference
item of the same speaker (a ``pairs.jsonl`` entry, or another item of the speaker drawn by seed):

1. the prompt: the omni-mode prefill of the reference (chat markup, the speech block with the reference
   transcript and units, up to the assistant ``<|audio_start|>``), built by ``generation.speech.prompt``;
2. the chunks: the target's sentences grouped as decoding groups them (a chunk closes once it holds more
   than ``sentence_min_text`` ids, and before it would exceed ``max_text + 1``), each with the units of its
   time span (chunk boundaries cut the unit stream half-way between two sentences);
3. rows and labels from :meth:`~mgm_omni.generation.speech.layout.RowLayout.sequence`.

Pairs that cannot be laid out (a sentence longer than a chunk, text needing more rows than its speech gives
without a ``filler`` unit, a reference over ``max_reference_units``, a sequence over ``max_rows``) are skipped
and counted by reason.
Sequences are written as ``rows`` / ``labels`` (T, 1 + k) int32 shards (:class:`~mgm_omni.training.shards.ShardWriter`).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.generation.speech.layout import IGNORE, ChunkRules, LayoutError, RowLayout, SpecialIds
from mgm_omni.generation.speech.prompt import SpeechPromptError, omni_prompt_rows
from mgm_omni.training.loader import PadCollate
from mgm_omni.training.shards import ShardWriter
from mgm_omni.training.speechlm_align import row_alignment

def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL file (blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i}: not JSON ({exc})") from None
    return rows


@dataclass(frozen=True)
class SequenceSpec:
    """How sequences are cut: chunk limits, longest sequence, the silence unit, unit rate, reference cap."""

    rules: ChunkRules = ChunkRules()
    max_rows: int = 4096
    filler: int | None = None
    unit_rate: float = 25.0
    max_reference_units: int = 375  # 15 s at 25 Hz


def segment_ids(item: dict, frontend) -> list[tuple[list[int], float, float]]:
    """(text ids, start s, end s) per sentence; an utterance is one sentence spanning the whole clip."""
    segments = item.get("segments") or []
    if not segments:
        return [(frontend.encode(item["text"]), 0.0, float("inf"))]
    out = []
    for i, seg in enumerate(segments):
        text = seg["text"]
        if i and (" " + text) in item["text"]:  # keep the word-boundary space a whole-text encode would see
            text = " " + text
        out.append((frontend.encode(text), float(seg["start"]), float(seg["end"])))
    return out


def plan_chunks(sentences: Sequence[tuple[list[int], float, float]], n_units: int, spec: SequenceSpec
                ) -> list[tuple[list[int], tuple[int, int]]]:
    """Group sentences into chunks: ``[(text ids, (first unit, end unit))]``; ``LayoutError`` if one is too long."""
    limit = spec.rules.max_text + 1
    groups: list[list[int]] = [[]]
    for i, (ids, _, _) in enumerate(sentences):
        if len(ids) > limit:
            raise LayoutError(f"a sentence of {len(ids)} text ids does not fit one chunk ({limit})")
        current = sum(len(sentences[j][0]) for j in groups[-1])
        if groups[-1] and current + len(ids) > limit:
            groups.append([])
        groups[-1].append(i)
        if sum(len(sentences[j][0]) for j in groups[-1]) > spec.rules.sentence_min_text:
            groups.append([])
    groups = [g for g in groups if g]
    cuts = [0]
    for prev, nxt in zip(groups, groups[1:]):
        mid = 0.5 * (sentences[prev[-1]][2] + sentences[nxt[0]][1])
        cuts.append(min(n_units, max(cuts[-1], round(mid * spec.unit_rate))))
    cuts.append(n_units)
    return [([t for j in g for t in sentences[j][0]], (cuts[c], cuts[c + 1])) for c, g in enumerate(groups)]


def build_sequence(layout: RowLayout, frontend, cfg: SpeechLMConfig, target: dict, target_units: np.ndarray,
                   reference: dict, reference_units: np.ndarray, spec: SequenceSpec
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and labels (T, 1 + k) of one voice-cloned target (see the module docstring)."""
    if len(reference_units) > spec.max_reference_units:  # its transcript would not fit the cut units
        raise LayoutError(f"reference of {len(reference_units)} units exceeds max_reference_units")
    refs = [int(u) for u in reference_units]
    prompt = omni_prompt_rows(frontend, cfg, reference["text"], refs, delay_rows=layout.delay_rows)
    units = [int(u) for u in target_units]
    chunks = []
    for ids, (a, b) in plan_chunks(segment_ids(target, frontend), len(units), spec):
        while ids and frontend.is_skippable(ids[0]):  # decoding drops them at a chunk start
            ids = ids[1:]
        chunks.append((ids, units[a:b]))
    rows, labels = layout.sequence(prompt.rows.tolist(), chunks, filler=spec.filler)
    if rows.shape[0] > spec.max_rows:
        raise LayoutError(f"sequence of {rows.shape[0]} rows exceeds max_rows {spec.max_rows}")
    return rows, labels


def choose_references(items: Sequence[dict], pairs: Iterable[dict] | None, seed: int) -> list[tuple[str, str]]:
    """(target id, reference id) pairs: the given ``pairs`` rows, else per item another item of its speaker."""
    if pairs is not None:
        return [(p["target_id"], p["reference_id"]) for p in pairs]
    by_speaker = defaultdict(list)
    for item in items:
        by_speaker[item["speaker"]].append(item["id"])
    rng = random.Random(seed)
    out = []
    for item in items:
        others = [i for i in by_speaker[item["speaker"]] if i != item["id"]]
        if others:
            out.append((item["id"], rng.choice(others)))
    return out


def aligned_rows(frontend, target: dict, alignment: np.ndarray | None, n_units: int, k: int,
                 spec: SequenceSpec) -> np.ndarray:
    """Per unit row of a one-chunk target, ``[text index, phoneme of each unit]`` (G, 1 + k,
    :func:`~mgm_omni.training.speechlm_align.row_alignment`) from a forced alignment (units, 2): per unit its
    text-id index and phoneme id. Empty (0, 1 + k) when there is no alignment, it does not cover the units, or
    the target spans several chunks (the guide's linear band)."""
    empty = np.zeros((0, 1 + k), dtype=np.int32)
    if alignment is None or len(alignment) != n_units:
        return empty
    plan = plan_chunks(segment_ids(target, frontend), n_units, spec)
    if len(plan) != 1:
        return empty
    ids = plan[0][0]
    skipped = 0
    while skipped < len(ids) and frontend.is_skippable(ids[skipped]):
        skipped += 1
    alignment = np.asarray(alignment)
    return row_alignment(alignment[:, 0], alignment[:, 1], k, skipped, len(ids) - skipped)


def write_sequences(out_dir: str | os.PathLike, frontend, cfg: SpeechLMConfig, items: Sequence[dict],
                    units: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]], spec: SequenceSpec,
                    delay_rows: int | None = None, items_per_shard: int = 10_000,
                    alignments: Mapping[str, np.ndarray] | None = None) -> Counter:
    """Lay out every (target, reference) pair into shards at ``out_dir``; returns counts by outcome.

    With ``alignments`` (item id -> per unit its text-id index and phoneme id) every item also gets
    an ``align`` field, per unit row its text index and its units' phonemes (:func:`aligned_rows`; empty where
    there is none) for the guided-attention and phoneme losses."""
    if cfg.tokenizer_speech_size - 2 <= max((int(u.max()) for u in units.values() if len(u)), default=0):
        raise ValueError(f"units reach the speech eos id {cfg.tokenizer_speech_size - 2}: the model's "
                         "tokenizer_speech_size must be the unit count + 2")
    ids = SpecialIds.from_tokenizer(frontend, cfg)
    layout = RowLayout(ids, cfg.speech_token_count, cfg.delay_rows if delay_rows is None else delay_rows)
    by_id = {item["id"]: item for item in items}
    counts: Counter = Counter()
    with ShardWriter(out_dir, items_per_shard, length_field="rows") as writer:
        for target_id, ref_id in pairs:
            if target_id not in by_id or ref_id not in by_id or target_id not in units or ref_id not in units:
                counts["skipped: item or units missing"] += 1
                continue
            try:
                rows, labels = build_sequence(layout, frontend, cfg, by_id[target_id], units[target_id],
                                              by_id[ref_id], units[ref_id], spec)
            except (LayoutError, SpeechPromptError) as exc:
                counts[f"skipped: {str(exc).split(':')[0][:60]}"] += 1
                continue
            item = {"rows": rows.numpy().astype(np.int32), "labels": labels.numpy().astype(np.int32)}
            if alignments is not None:
                item["align"] = aligned_rows(frontend, by_id[target_id], alignments.get(target_id),
                                             len(units[target_id]), cfg.speech_token_count, spec)
                counts["aligned"] += bool(len(item["align"]))
            writer.add(item)
            counts["written"] += 1
    return counts


class RowCollate:
    """Pads ``rows`` (with 0), ``labels`` (with -100) and ``align`` if present (with -1) to the longest item,
    as int64."""

    def __init__(self) -> None:
        self.pad = PadCollate({"labels": IGNORE, "align": -1})

    def __call__(self, items):
        batch = self.pad(items)
        return {k: v.long() for k, v in batch.items()}


def speech_seconds(batch: dict[str, torch.Tensor], speech_eos: int, unit_rate: float = 25.0) -> float:
    """Seconds of target speech a batch teaches: supervised speech labels that are codes, over the unit rate."""
    speech = batch["labels"][..., 1:]
    return float(((speech >= 0) & (speech < speech_eos)).sum()) / unit_rate
