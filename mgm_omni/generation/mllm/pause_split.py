"""Cut long audio into segments of at most one window, each cut in the quietest moment near the window's end.

A brain trained on one 30 s window at a time (the default brain) transcribes an hour as a run of such
segments, each its own prompt, instead of one prompt of 120 windows it has never seen the like of. A cut in
the middle of a word would lose or garble that word, so each cut goes in the quietest 100 ms (mean power of
20 ms frames, smoothed over 5 frames) of the last ``search`` samples before the limit: the pause between two
sentences or words. Digital silence ties are broken toward the middle of the latest quiet run.

    spans = pause_spans(wave16k, max_samples=480_000, search_samples=160_000)   # [(start, stop), ...]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FRAME = 320  # 20 ms at 16 kHz
SMOOTH_FRAMES = 5  # the quietest 100 ms, not the quietest zero crossing


class PauseSplitError(ValueError):
    """Settings or audio that cannot be split (non-positive lengths, a search longer than a segment, not mono)."""


def quietest_sample(piece: torch.Tensor, frame: int = FRAME, smooth: int = SMOOTH_FRAMES) -> int:
    """Index (within ``piece``) of the centre of its quietest ``smooth`` x ``frame`` samples.

    Among equally quiet positions (e.g. digital silence) the middle of the last quiet run is taken.
    """
    n_frames = piece.shape[0] // frame
    if n_frames == 0:
        return piece.shape[0] // 2
    power = piece[: n_frames * frame].float().reshape(n_frames, frame).pow(2).mean(dim=1)  # (n_frames,)
    k = min(smooth, n_frames)
    smoothed = F.avg_pool1d(power[None, None], k, stride=1)[0, 0]  # (n_frames - k + 1,)
    quiet = smoothed <= smoothed.min() * (1 + 1e-6) + 1e-12
    last = int(quiet.nonzero()[-1])
    first = last
    while first > 0 and bool(quiet[first - 1]):
        first -= 1
    centre_frame = (first + last) / 2 + k / 2  # the smoothed value at i covers frames i .. i+k-1
    return min(piece.shape[0] - 1, int(centre_frame * frame))


def pause_spans(wave: torch.Tensor, max_samples: int, search_samples: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``wave`` end to end, each at most ``max_samples`` long.

    Audio no longer than ``max_samples`` is one span. Otherwise each cut is the quietest moment of the
    ``search_samples`` before the current span's limit.
    """
    if max_samples <= 0 or not 0 < search_samples <= max_samples:
        raise PauseSplitError(f"need 0 < search_samples <= max_samples, got {search_samples}, {max_samples}")
    if wave.dim() != 1:
        raise PauseSplitError(f"expected mono samples of shape (S,), got {tuple(wave.shape)}")
    n = wave.shape[0]
    spans, start = [], 0
    while n - start > max_samples:
        lo = start + max_samples - search_samples
        cut = lo + quietest_sample(wave[lo:start + max_samples])
        cut = max(cut, start + 1)
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans
