"""Recipe: the text front-end of a small mouth (G2P + a BPE over phonemes), checked for tokens per second.

A SpeechLM row carries one text id and comes at 6.25 rows per second of speech, and text must lead the
speech it describes, so the tokenizer must give fewer text ids than that per second of speech: the check
here is ``max_tokens_per_second`` (default 5.0) on every language.

    python recipes/text_frontend.py --config recipes/configs/text_frontend.yaml

1. Read the training text: corpus manifests (JSONL: ``text``, ``language``), named sentence sources
   (``mgm_omni.data.text_sources``) and files of one sentence a line.
2. Measure speech: the rate manifests' ``duration`` fields, and/or a sample of the training sentences
   rendered with espeak-ng / flite (those sentences are then left out of training: unseen text).
3. Phonemise everything once (``PhonemeG2P``).
4. For each size in ``sweep_vocab_sizes``, train and print tokens per second (a table, nothing saved).
5. Train at ``vocab_size``, print the same table, fail if a language is above the limit, else save the
   tokenizer to ``output_dir``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from mgm_omni.text.g2p import G2PConfig
from mgm_omni.text.normalize import LANGS
from mgm_omni.text.phoneme_tokenizer import PhonemeG2P, PhonemeTokenizer, base_vocab_size

# Engines of the rendered rate sample (``render``): command builders, one per language.
RENDER_ENGINES = {
    "espeak-ng": ("en", lambda text, out: ["espeak-ng", "-v", "en-us", "-w", out, text]),
    "flite": ("en", lambda text, out: ["flite", "-voice", "slt", "-t", text, "-o", out]),
    "espeak-ng-cmn": ("zh", lambda text, out: ["espeak-ng", "-v", "cmn-latn-pinyin", "-w", out, text]),
}


class RecipeError(RuntimeError):
    """Bad configuration or input, or a tokenizer that fails the tokens-per-second check."""


@dataclass
class TextFrontendConfig:
    """All of the recipe's settings (YAML keys of the same names; paths relative to the YAML file)."""

    output_dir: str
    vocab_size: int = 4096
    min_frequency: int = 2
    max_tokens_per_second: float = 5.0
    g2p: dict = field(default_factory=dict)  # G2PConfig fields
    train_manifests: list = field(default_factory=list)  # JSONL: text, language
    train_sources: dict = field(default_factory=dict)  # lang -> names of mgm_omni.data.text_sources
    train_files: dict = field(default_factory=dict)  # lang -> files of one sentence a line
    rate_manifests: list = field(default_factory=list)  # JSONL: text, language, duration (seconds)
    rate_splits: list = field(default_factory=list)  # only these ``split`` values of rate_manifests (all if empty)
    render: dict = field(default_factory=dict)  # engine name -> sentences to render (RENDER_ENGINES)
    sweep_vocab_sizes: list = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise RecipeError("output_dir must be a non-empty path")
        for size in [self.vocab_size, *self.sweep_vocab_sizes]:
            if not isinstance(size, int) or size < base_vocab_size():
                raise RecipeError(f"vocab sizes must be ints >= {base_vocab_size()} (the base vocabulary)")
        if not isinstance(self.max_tokens_per_second, (int, float)) or self.max_tokens_per_second <= 0:
            raise RecipeError("max_tokens_per_second must be a positive number")
        for lang in [*self.train_sources, *self.train_files]:
            if lang not in LANGS:
                raise RecipeError(f"unknown language {lang!r}; use one of {LANGS}")
        for name, n in self.render.items():
            if name not in RENDER_ENGINES or not isinstance(n, int) or n < 1:
                raise RecipeError(f"render: {name!r}: {n!r}; engines are {sorted(RENDER_ENGINES)}, counts ints >= 1")
        G2PConfig(**self.g2p)  # checks the G2P settings before any work


def load_config(path: str | Path) -> TextFrontendConfig:
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {f.name for f in fields(TextFrontendConfig)}
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}")

    def rel(p):
        return str((path.parent / p).resolve())

    raw["output_dir"] = rel(raw.get("output_dir", ""))
    for key in ("train_manifests", "rate_manifests"):
        raw[key] = [rel(p) for p in raw.get(key) or []]
    raw["train_files"] = {lang: [rel(p) for p in ps] for lang, ps in (raw.get("train_files") or {}).items()}
    return TextFrontendConfig(**raw)


def read_manifest(path: str, need_duration: bool) -> list[dict]:
    """Rows of a JSONL manifest with ``text``, ``language`` (and ``duration`` if needed)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "language" not in row and "lang" in row:  # corpus manifests name it ``lang``
                row["language"] = row["lang"]
            ok = isinstance(row.get("text"), str) and row.get("language") in LANGS
            if need_duration:
                ok = ok and isinstance(row.get("duration"), (int, float)) and row["duration"] > 0
            if not ok:
                raise RecipeError(f"{path}:{i}: needs text, language in {LANGS}"
                                  + (", duration > 0" if need_duration else ""))
            rows.append(row)
    return rows


def training_text(cfg: TextFrontendConfig) -> list[tuple[str, str]]:
    """(language, sentence) pairs from all configured sources, in order."""
    pairs = [(r["language"], r["text"]) for p in cfg.train_manifests for r in read_manifest(p, False)]
    for lang, paths in cfg.train_files.items():
        for p in paths:
            pairs += [(lang, s.strip()) for s in Path(p).read_text(encoding="utf-8").splitlines() if s.strip()]
    if cfg.train_sources:
        from mgm_omni.data.text_sources import load_sentences  # needs the data extra (opencc, hsk)

        for lang, sentences in load_sentences({k: tuple(v) for k, v in cfg.train_sources.items()}).items():
            pairs += [(lang, s.text) for s in sentences]
    if not pairs:
        raise RecipeError("no training text: set train_manifests, train_files or train_sources")
    return pairs


def render_rate_rows(cfg: TextFrontendConfig, pairs: list[tuple[str, str]]) -> list[dict]:
    """Render a sample of the training sentences and measure each one's speech duration.

    Duration is the rendered file's length less leading and trailing silence (below -40 dBFS).
    """
    rng = random.Random(cfg.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "x.wav")
        for name, n in cfg.render.items():
            lang, command = RENDER_ENGINES[name]
            pool = [t for lg, t in pairs if lg == lang]
            for text in rng.sample(pool, min(n, len(pool))):
                try:
                    subprocess.run(command(text, out), check=True, capture_output=True, timeout=60)
                    audio, sr = sf.read(out, dtype="float32", always_2d=True)
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    raise RecipeError(f"render with {name} failed ({exc}); is it installed?") from exc
                loud = np.flatnonzero(np.abs(audio.mean(axis=1)) > 0.01)
                if len(loud):
                    rows.append({"text": text, "language": lang, "duration": (loud[-1] - loud[0] + 1) / sr,
                                 "engine": name})
    return rows


def tokens_per_second(tokenizer: PhonemeTokenizer, rows: list[dict], units: list, key: str = "language"
                      ) -> dict[str, dict]:
    """Per language (or other row ``key``): sentences, seconds of speech, text ids, ids per second.

    ``units`` are the G2P units of ``rows``; a row without ``key`` counts under ``"-"``.
    """
    stats: dict[str, dict] = {}
    for row, unit in zip(rows, units, strict=True):
        s = stats.setdefault(str(row.get(key, "-")), {"sentences": 0, "seconds": 0.0, "tokens": 0})
        s["sentences"] += 1
        s["seconds"] += float(row["duration"])
        s["tokens"] += len(tokenizer.encode_units(unit))
    for s in stats.values():
        s["tokens_per_second"] = s["tokens"] / s["seconds"]
    return stats


def _print_table(vocab_size: int, stats: dict[str, dict]) -> None:
    for name, s in sorted(stats.items()):
        print(f"  vocab {vocab_size:6d}  {name:>13}: {s['sentences']:6d} sentences  {s['seconds']:8.1f} s  "
              f"{s['tokens']:8d} tokens  {s['tokens_per_second']:.2f} tokens/s")


def run(cfg: TextFrontendConfig) -> dict[str, dict]:
    """Run the recipe; returns the final tokenizer's per-language stats (raises ``RecipeError`` on failure)."""
    t0 = time.perf_counter()
    pairs = training_text(cfg)
    rate_rows = [r for p in cfg.rate_manifests for r in read_manifest(p, True)
                 if not cfg.rate_splits or r.get("split") in cfg.rate_splits]
    if cfg.render:
        rendered = render_rate_rows(cfg, pairs)
        held_out = {r["text"] for r in rendered}
        pairs = [p for p in pairs if p[1] not in held_out]  # the rendered sample is unseen text
        print(f"rendered {len(rendered)} held-out sentences for the speaking rate ({', '.join(cfg.render)}) "
              f"in {time.perf_counter() - t0:.1f} s")
        rate_rows += rendered
    if not rate_rows:
        raise RecipeError("no speech durations: set rate_manifests (text, language, duration) or render")

    g2p = PhonemeG2P(G2PConfig(**cfg.g2p))
    t1 = time.perf_counter()
    prepared = [g2p(text) for _, text in pairs]
    rate_units = [g2p.g2p(r["text"]) for r in rate_rows]
    print(f"training text: {len(pairs)} sentences "
          f"({', '.join(f'{lg} {sum(p[0] == lg for p in pairs)}' for lg in LANGS)}), "
          f"phonemised in {time.perf_counter() - t1:.1f} s; espeak-ng {g2p.g2p.info['espeak_ng']}, "
          f"pypinyin {g2p.g2p.info['pypinyin']}")

    for size in cfg.sweep_vocab_sizes:
        tok = PhonemeTokenizer.train(prepared, size, G2PConfig(**cfg.g2p), cfg.min_frequency)
        _print_table(len(tok), tokens_per_second(tok, rate_rows, rate_units))

    tok = PhonemeTokenizer.train(prepared, cfg.vocab_size, G2PConfig(**cfg.g2p), cfg.min_frequency)
    stats = tokens_per_second(tok, rate_rows, rate_units)
    print(f"final tokenizer: {len(tok)} ids (limit {cfg.max_tokens_per_second} tokens per second of speech)")
    _print_table(len(tok), stats)
    if any("engine" in r for r in rate_rows):
        _print_table(len(tok), tokens_per_second(tok, rate_rows, rate_units, key="engine"))
    over = {lg: s["tokens_per_second"] for lg, s in stats.items() if s["tokens_per_second"] > cfg.max_tokens_per_second}
    if over:
        raise RecipeError(f"tokens per second above {cfg.max_tokens_per_second}: "
                          + ", ".join(f"{lg} {v:.2f}" for lg, v in sorted(over.items()))
                          + "; raise vocab_size or train on more text")
    tok.save(cfg.output_dir)
    print(f"saved to {cfg.output_dir} in {time.perf_counter() - t0:.1f} s")
    return stats


def main(config_path: str | Path, **overrides) -> dict[str, dict]:
    cfg = load_config(config_path)
    return run(replace(cfg, **{k: v for k, v in overrides.items() if v is not None}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--output-dir")
    args = parser.parse_args()
    try:
        main(args.config, vocab_size=args.vocab_size, output_dir=args.output_dir)
    except RecipeError as exc:
        sys.exit(f"text_frontend: {exc}")
