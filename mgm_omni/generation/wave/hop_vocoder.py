"""HiFi-GAN continuing across streaming hops: context on both sides of every seam instead of a cross-fade.

HiFi-GAN V1 is not causal: a frame's samples depend on about 12 mel frames on each side (conv_pre, the
transposed convs and the dilated residual blocks at the 8x stage dominate). Each push vocodes its new frames
with ``left_frames`` of earlier mel in front and withholds its last ``right_frames`` until the next push
brings their right context. Measured with the universal weights on a 5.3 s corpus clip, hops of 40-86
frames, against one call over the whole mel: 12 + 12 frames: max difference 4e-5 (float noise); 8 + 8:
0.14; 8 + 8 with a 4-frame Hann cross-fade of the withheld audio: 0.21; no context: 0.76. So no
cross-fade: the context alone makes the seams exact. The cost is ``left + right`` extra frames per call.

The same seams bound one call's length: a long push is vocoded in pieces of at most ``max_frames`` frames
(context included). The generator's activations grow with the call (measured, universal weights, one
thread, 2-core AMD EPYC: a 712-frame call, one 200-token hop of the own mouth, peaks 366 MB above a
50-frame call; 160 frames add nothing). Each call pays 24 frames of context, so longer calls waste less:
on two threads (same machine, 2026-12-06) the time per frame stays flat with length (float32 3.5-3.7 ms,
bfloat16 2.1-2.2 ms from 48 to 400 frames), and per emitted frame a 400-frame call costs 3.78 ms in
float32 (160 frames: 4.38) and 2.19 ms in bfloat16 (160: 2.55). The price is memory: the shipped mouth's
`tts` of 654.9 s (one thread, bfloat16 vocoder, the slow test) peaks at 766 MB with 400-frame calls, 714 MB
with 256 and 700 MB with 160. Pieces of 400 frames: about 14 % less vocoder time for 66 MB.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mgm_omni.models.hifigan import HiFiGANGenerator

MAX_CALL_FRAMES = 400  # frames per vocoder call, context included (module docstring)


class HopVocoder:
    """HiFi-GAN continuing across hops (typed stream state; ``reset()`` starts over).

    Each :meth:`push` vocodes the withheld and new frames with ``left_frames`` of earlier mel in front and
    emits all but the last ``right_frames`` (their right context comes with the next push; the final push
    emits everything), in calls of at most ``max_frames`` frames (``None``: one call per push). With both
    contexts at least the generator's receptive field the emitted wave is one call's.

    ``first_piece``: the stream's first call emits at most this many frames, so its first audio comes after a
    short call (:meth:`pieces` yields each call's audio as it is made); the rest of that push follows at once,
    in calls of the usual size. The context makes the audio the same as without it.
    """

    def __init__(self, vocoder: HiFiGANGenerator, left_frames: int, right_frames: int,
                 max_frames: int | None = MAX_CALL_FRAMES, first_piece: int | None = None) -> None:
        if max_frames is not None and max_frames <= left_frames + right_frames:
            raise ValueError(f"max_frames ({max_frames}) must exceed left_frames + right_frames "
                             f"({left_frames} + {right_frames})")
        if first_piece is not None and first_piece < 1:
            raise ValueError(f"first_piece must be >= 1 frame, got {first_piece}")
        self.vocoder, self.left_frames, self.right_frames = vocoder, left_frames, right_frames
        # frames emitted per vocoder call: the rest of a call is context
        self.piece = None if max_frames is None else max_frames - left_frames - right_frames
        self.first_piece = first_piece
        self.hop = vocoder.cfg.hop_size
        self.reset()

    def reset(self) -> None:
        self.mel: torch.Tensor | None = None  # (1, 80, left + withheld): what the next push still needs
        self.left = 0  # frames of ``mel`` already emitted (left context only)
        self.started = False  # whether a call has emitted frames yet

    def push(self, mel_new: torch.Tensor, final: bool = False) -> np.ndarray:
        """(1, 80, f) new frames -> float32 samples of the frames whose right context is complete."""
        return np.concatenate([np.zeros(0, np.float32), *self.pieces(mel_new, final)])

    def pieces(self, mel_new: torch.Tensor, final: bool = False) -> Iterator[np.ndarray]:
        """:meth:`push` one vocoder call at a time: each call's samples as soon as they are made. The stream
        state moves on before the first call, so the next push may follow once these are consumed."""
        with torch.inference_mode():
            mel = mel_new if self.mel is None else torch.cat([self.mel, mel_new], dim=2)
            n = mel.shape[2]
            stop = n if final else max(self.left, n - self.right_frames)  # frames [self.left, stop) are emitted
            left = self.left
            keep = max(0, stop - self.left_frames)
            self.mel = None if final else mel[:, :, keep:].clone()
        self.left = stop - keep
        first = not self.started and stop > left
        self.started = self.started or stop > left
        return self._calls(mel, left, stop, first)

    @torch.inference_mode()
    def _calls(self, mel: torch.Tensor, left: int, stop: int, first: bool) -> Iterator[np.ndarray]:
        n = mel.shape[2]
        while stop > left:  # frames [left, end) from one call over [lo, hi): their context on both sides
            piece = self.first_piece if first and self.first_piece is not None else self.piece
            first = False
            end = stop if piece is None else min(stop, left + piece)
            lo, hi = max(0, left - self.left_frames), n if end == n else min(n, end + self.right_frames)
            wave = self.vocoder.vocode(mel[:, :, lo:hi])[0]
            yield wave[(left - lo) * self.hop: (end - lo) * self.hop].float().numpy()
            left = end
