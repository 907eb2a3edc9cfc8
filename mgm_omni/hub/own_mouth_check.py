"""Does storing a mouth's weights in half precision change what it says? Greedy decodes of both, compared.

    check = compare_storage(fp32_root, shipped_root, ["The birch canoe slid.", "今天天气很好。"])
    print(check.markdown())        # one row per sentence: tokens, identical prefix, audio difference

Both mouths decode every sentence greedily (temperature 0, same seed, same voice: the reference mouth's shipped
voice) and render it; the table gives the speech tokens each produced, how many leading tokens agree, the
largest audio difference over the common length relative to the reference's peak and, with a ``transcriber``
(16 kHz wave -> text, e.g. Whisper base), what each rendering is heard to say: greedy decoding is autoregressive,
so one flipped near-tie changes every later token, and the transcripts say whether that matters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass
class SentenceCheck:
    text: str
    reference_tokens: list[int]
    stored_tokens: list[int]
    audio_rel_diff: float  # max |a - b| over the common length / max |a|
    reference_heard: str = ""
    stored_heard: str = ""

    @property
    def same_prefix(self) -> int:
        n = 0
        for a, b in zip(self.reference_tokens, self.stored_tokens):
            if a != b:
                break
            n += 1
        return n

    @property
    def identical(self) -> bool:
        return self.reference_tokens == self.stored_tokens


@dataclass
class StorageCheck:
    sentences: list[SentenceCheck]

    @property
    def agreement(self) -> float:
        """Leading tokens that agree, over all sentences, as a fraction of the reference's tokens."""
        total = sum(len(s.reference_tokens) for s in self.sentences)
        return sum(s.same_prefix for s in self.sentences) / total if total else 1.0

    def markdown(self) -> str:
        lines = ["| sentence | tokens (float32 / stored) | identical leading tokens | audio max diff / peak | "
                 "heard (float32) | heard (stored) |", "|---|---|---|---|---|---|"]
        for s in self.sentences:
            lines.append(f"| {s.text[:48]} | {len(s.reference_tokens)} / {len(s.stored_tokens)} | "
                         f"{s.same_prefix} | {s.audio_rel_diff:.4f} | {_short(s.reference_heard)} | "
                         f"{_short(s.stored_heard)} |")
        same = sum(s.identical for s in self.sentences)
        lines += ["", f"{same} of {len(self.sentences)} sentences decode to identical speech tokens; "
                      f"{100 * self.agreement:.1f}% of the float32 mouth's tokens are reproduced before the first "
                      "difference (greedy, one seed)."]
        return "\n".join(lines)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."  # Whisper may loop on a word


def _speak(root: str | os.PathLike, texts: list[str], voice, max_rows: int):
    from mgm_omni.generation.pipeline import TTSPipeline

    pipe = TTSPipeline.load(root, voice=voice, temperature=0.0, max_rows=max_rows, seed=0)
    out = []
    for text in texts:
        tokens: list[int] = []
        chunks = list(pipe.stream(text, on_row=lambda row: tokens.extend(int(t) for t in row.tokens)))
        out.append((tokens, np.concatenate(chunks) if chunks else np.zeros(0, np.float32)))
    return out, pipe.voice, pipe.sample_rate


def _hear(transcriber, audio: np.ndarray, sample_rate: int) -> str:
    import torch

    from mgm_omni.audio import resample

    if audio.size == 0:
        return ""
    return transcriber(resample(torch.from_numpy(audio).float(), sample_rate, 16000)).strip().replace("|", "/")


def compare_storage(reference: str | os.PathLike, stored: str | os.PathLike, texts: list[str],
                    max_rows: int = 600, transcriber=None) -> StorageCheck:
    """Greedy decodes of ``texts`` by the float32 mouth ``reference`` and the ``stored`` one, in the same voice
    (``transcriber``: 16 kHz wave -> text, to hear both renderings)."""
    if not texts:
        raise ValueError("compare_storage needs at least one sentence")
    ref, voice, sample_rate = _speak(reference, texts, None, max_rows)
    got, _, _ = _speak(stored, texts, voice, max_rows)
    checks = []
    for text, (rt, ra), (st, sa) in zip(texts, ref, got):
        n = min(len(ra), len(sa))
        peak = float(np.abs(ra).max()) if len(ra) else 0.0
        diff = float(np.abs(ra[:n] - sa[:n]).max()) / peak if n and peak > 0 else 0.0
        heard = ("", "")
        if transcriber is not None:
            heard = tuple(_hear(transcriber, a, sample_rate) for a in (ra, sa))
        checks.append(SentenceCheck(text, rt, st, diff, *heard))
    return StorageCheck(checks)
