"""A small synthetic corpus with learnable structure, for recipe smoke runs, tests and throughput benchmarks.

Nothing here is speech. Each item is a few sentences of random words; every character lasts ``units_per_char``
units at 25 Hz, and its units, tone, mel frames and the speaker's x-vector follow fixed rules, so a recipe
that learns shows a falling loss. It has the layout of the corpus builder (``mgm_omni.data``) as the recipes
read it: ``manifest.jsonl`` rows with ``id, audio, text, lang, speaker, split, kind, duration`` and, for
long-form items, ``segments`` (start, end, text); ``audio/*.wav`` at 16 kHz; and ``units/`` shards in the
format of the speech-tokenizer recipe.

:func:`write_char_tokenizer` writes a character-level tokenizer directory with the chat markup and the
three audio ids last (``text_size = len(tokenizer)``, spec §1.2), which ``load_text_frontend(dir, "own-bpe")``
reads.
"""

from __future__ import annotations

import json
import math
import os
import string
from pathlib import Path

import numpy as np
import soundfile as sf

from mgm_omni.training.unit_shards import write_units

UNIT_RATE = 25
SAMPLE_RATE = 16000
SPECIALS_FIRST = ("<|endoftext|>", "<|im_end|>", "<|im_start|>")
SPECIALS_LAST = ("<|audio_start|>", "<|audio_end|>", "<|audio_sep|>")
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
WORDS = ("ba", "di", "fo", "gu", "ke", "lo", "mi", "nu", "pa", "ro", "se", "ti", "vo", "wa", "zu")


def write_char_tokenizer(out: str | os.PathLike) -> int:
    """A character tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) in ``out``; returns its size."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate([*SPECIALS_FIRST, *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS_FIRST])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in SPECIALS_LAST])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return tok.get_vocab_size(with_added_tokens=True)


def char_units(text: str, speaker: int, num_units: int, units_per_char: int) -> np.ndarray:
    """The units of ``text``: per character ``units_per_char`` ids from its code point, shifted by the speaker."""
    out = [(ord(c) * 7 + j * 3 + speaker * 5) % num_units for c in text for j in range(units_per_char)]
    return np.asarray(out, dtype=np.int32)


def char_wave(text: str, speaker: int, units_per_char: int, rng: np.random.Generator) -> np.ndarray:
    """16 kHz tones: one per character (pitch from the character and the speaker), light noise."""
    n = SAMPLE_RATE * units_per_char // UNIT_RATE
    t = np.arange(n) / SAMPLE_RATE
    parts = []
    for c in text:
        f0 = 120.0 + 15.0 * (ord(c) % 23) + 20.0 * speaker
        tone = sum(np.sin(2 * math.pi * f0 * h * t) / h for h in (1, 2, 3)) if c != " " else 0 * t
        parts.append(0.2 * tone + 0.003 * rng.standard_normal(n))
    return np.concatenate(parts).astype(np.float32)


def _sentence(rng: np.random.Generator, words: int) -> str:
    w = [WORDS[i] for i in rng.integers(0, len(WORDS), words)]
    return " ".join(w).capitalize() + "."


def write_synthetic_corpus(out: str | os.PathLike, speakers: int = 2, items_per_speaker: int = 4,
                           longform_per_speaker: int = 1, num_units: int = 32, units_per_char: int = 4,
                           words: tuple[int, int] = (2, 4), seed: int = 0, audio: bool = True) -> list[dict]:
    """Write ``manifest.jsonl``, ``audio/`` (when ``audio``) and ``units/`` into ``out``; returns the rows.

    Every item is in split ``train``; long-form items hold 3 sentences with 0.2 s pauses counted in their
    segments' times (the pauses carry silence units: id 0).
    """
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, units = [], []
    for s in range(speakers):
        for i in range(items_per_speaker + longform_per_speaker):
            longform = i >= items_per_speaker
            sentences = [_sentence(rng, int(rng.integers(words[0], words[1] + 1))) for _ in range(3 if longform else 1)]
            pause = int(0.2 * UNIT_RATE)
            item_units, waves, segments, cursor = [], [], [], 0
            for k, sent in enumerate(sentences):
                u = char_units(sent, s, num_units, units_per_char)
                segments.append({"start": cursor / UNIT_RATE, "end": (cursor + len(u)) / UNIT_RATE, "text": sent})
                item_units.append(u)
                waves.append(char_wave(sent, s, units_per_char, rng))
                cursor += len(u)
                if k < len(sentences) - 1:
                    item_units.append(np.zeros(pause, dtype=np.int32))
                    waves.append(np.zeros(pause * SAMPLE_RATE // UNIT_RATE, dtype=np.float32))
                    cursor += pause
            item_id = f"spk{s}-{i:03d}"
            wave = np.concatenate(waves)
            if audio:
                sf.write(str(out / "audio" / f"{item_id}.wav"), wave, SAMPLE_RATE, subtype="PCM_16")
            row = {"id": item_id, "audio": f"audio/{item_id}.wav", "text": " ".join(sentences), "lang": "en",
                   "speaker": f"spk{s}", "split": "train", "kind": "longform" if longform else "utterance",
                   "duration": len(wave) / SAMPLE_RATE, "sample_rate": SAMPLE_RATE, "num_samples": len(wave)}
            if longform:
                row["segments"] = segments
            rows.append(row)
            units.append(np.concatenate(item_units))
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    write_units(out / "units", [r["id"] for r in rows], units)
    return rows
