"""Audio post-processing for the corpus: one rate, vocal-tract-length warp, silence trim, level, joins.

All functions take and return 1-D float32 arrays.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soxr


@dataclass(frozen=True)
class SignalConfig:
    """How raw engine audio becomes corpus audio.

    Args:
        sample_rate: the corpus rate (every item is resampled to it).
        trim_db: frames quieter than the loudest frame minus this are silence at the ends.
        margin_s: silence kept before the first and after the last loud frame.
        level_dbfs: RMS of the loud frames after levelling (so engines do not differ in loudness).
        peak: the largest absolute sample allowed after levelling.
    """

    sample_rate: int = 22050
    trim_db: float = 40.0
    margin_s: float = 0.06
    level_dbfs: float = -20.0
    peak: float = 0.95
    min_seconds: float = 0.3  # shorter than this after trimming means the engine failed

    def __post_init__(self):
        if self.sample_rate < 8000 or not 10 <= self.trim_db <= 80 or not 0 <= self.margin_s <= 1:
            raise ValueError("SignalConfig needs sample_rate >= 8000, trim_db in [10, 80], margin_s in [0, 1]")
        if not -40 <= self.level_dbfs <= -3 or not 0 < self.peak <= 1:
            raise ValueError("SignalConfig needs level_dbfs in [-40, -3] and peak in (0, 1]")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def tempo(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Change the duration by 1/``factor`` without changing pitch or formants (sox WSOLA ``tempo``)."""
    if abs(factor - 1.0) < 1e-6:
        return x
    if shutil.which("sox") is None:
        raise RuntimeError("the vtl transform needs sox (apt-get install sox)")
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sr)]
    proc = subprocess.run(["sox", *raw, "-", *raw, "-", "tempo", "-s", f"{factor:.6f}"],
                          input=np.ascontiguousarray(x, np.float32).tobytes(), capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"sox tempo failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return np.frombuffer(proc.stdout, np.float32).copy()


def vtl_warp(x: np.ndarray, sr: int, alpha: float) -> np.ndarray:
    """Scale formants and F0 by ``alpha`` (a shorter vocal tract for alpha > 1) and keep the duration.

    Resampling from ``sr`` to ``sr / alpha`` and playing at ``sr`` compresses time by alpha, which scales every
    frequency by alpha; WSOLA then stretches the duration back.
    """
    if abs(alpha - 1.0) < 1e-6:
        return x
    warped = resample(x, sr, round(sr / alpha))
    return tempo(warped, sr, 1.0 / alpha)


def _frame_db(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    hop = max(1, sr // 100)  # 10 ms frames
    n = len(x) // hop
    if n == 0:
        return np.full(1, -200.0), hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-10), hop


def trim(x: np.ndarray, sr: int, cfg: SignalConfig) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``margin_s`` around the speech."""
    db, hop = _frame_db(x, sr)
    loud = np.flatnonzero(db > db.max() - cfg.trim_db)
    if len(loud) == 0 or db.max() < -70:
        return x[:0]
    margin = round(cfg.margin_s * sr)
    start = max(0, loud[0] * hop - margin)
    end = min(len(x), (loud[-1] + 1) * hop + margin)
    return x[start:end]


def level(x: np.ndarray, sr: int, cfg: SignalConfig) -> np.ndarray:
    """Scale so the loud frames have RMS ``level_dbfs``, then limit the peak to ``cfg.peak``."""
    db, _ = _frame_db(x, sr)
    loud = db[db > db.max() - cfg.trim_db]
    if len(loud) == 0 or not np.isfinite(x).all():
        return x
    rms_db = 10 * np.log10(np.mean(10 ** (loud / 10)))
    y = x * 10 ** ((cfg.level_dbfs - rms_db) / 20)
    peak = float(np.abs(y).max())
    if peak > cfg.peak:
        y = y * (cfg.peak / peak)
    return y.astype(np.float32)


def to_corpus(x: np.ndarray, sr: int, cfg: SignalConfig, vtl: float = 1.0) -> np.ndarray:
    """Engine audio -> corpus audio: resample to the corpus rate, warp, trim (not levelled)."""
    if not np.isfinite(x).all():
        raise RuntimeError("engine audio has NaN or inf samples")
    y = vtl_warp(resample(x, sr, cfg.sample_rate), cfg.sample_rate, vtl)
    y = trim(y, cfg.sample_rate, cfg)
    if len(y) < cfg.min_seconds * cfg.sample_rate:
        raise RuntimeError(f"engine audio is silent or shorter than {cfg.min_seconds} s after trimming")
    return y


def join(pieces: list[np.ndarray], pauses_s: list[float], sr: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate pieces with silences between them; returns the audio and each piece's (start, end) in s."""
    if len(pauses_s) != len(pieces) - 1:
        raise ValueError("join needs one pause between each two pieces")
    out, bounds, pos = [], [], 0
    for i, p in enumerate(pieces):
        bounds.append((pos / sr, (pos + len(p)) / sr))
        out.append(p)
        pos += len(p)
        if i < len(pauses_s):
            gap = np.zeros(round(pauses_s[i] * sr), np.float32)
            out.append(gap)
            pos += len(gap)
    return np.concatenate(out).astype(np.float32), bounds
