"""HiFi-GAN continuing across streaming hops: context on both sides of every seam instead of a cross-fade.

HiFi-GAN V1 is not causal: a frame's samples depend on about 12 mel frames on each side (conv_pre, the
transposed convs and the dilated residual blocks at the 8x stage dominate). Each push vocodes its new frames
with ``left_frames`` of earlier mel in front and withholds its last ``right_frames`` until the next push
brings their right context. Measured with the universal weights on a 5.3 s corpus clip, hops of 40-86
frames, against one call over the whole mel: 12 + 12 frames: max difference 4e-5 (float noise); 8 + 8:
0.14; 8 + 8 with a 4-frame Hann cross-fade of the withheld audio: 0.21; no context: 0.76. So no
cross-fade: the context alone makes the seams exact. The cost is ``left + right`` extra frames per call.
"""

from __future__ import annotations

import numpy as np
import torch

from mgm_omni.models.hifigan import HiFiGANGenerator


class HopVocoder:
    """HiFi-GAN continuing across hops (typed stream state; ``reset()`` starts over).

    Each :meth:`push` vocodes the withheld and new frames with ``left_frames`` of earlier mel in front and
    emits all but the last ``right_frames`` (their right context comes with the next push; the final push
    emits everything). With both at least the generator's receptive field the emitted wave is one call's.
    """

    def __init__(self, vocoder: HiFiGANGenerator, left_frames: int, right_frames: int) -> None:
        self.vocoder, self.left_frames, self.right_frames = vocoder, left_frames, right_frames
        self.hop = vocoder.cfg.hop_size
        self.reset()

    def reset(self) -> None:
        self.mel: torch.Tensor | None = None  # (1, 80, left + withheld): what the next push still needs
        self.left = 0  # frames of ``mel`` already emitted (left context only)

    @torch.inference_mode()
    def push(self, mel_new: torch.Tensor, final: bool = False) -> np.ndarray:
        """(1, 80, f) new frames -> float32 samples of the frames whose right context is complete."""
        mel = mel_new if self.mel is None else torch.cat([self.mel, mel_new], dim=2)
        left, n = self.left, mel.shape[2]
        stop = n if final else max(left, n - self.right_frames)  # frames [left, stop) are emitted
        if stop > left:
            wave = self.vocoder.vocode(mel)[0]  # (n * hop,)
            chunk = wave[left * self.hop: stop * self.hop].float().numpy()
        else:
            chunk = np.zeros(0, np.float32)
        keep = max(0, stop - self.left_frames)
        self.mel = None if final else mel[:, :, keep:].clone()
        self.left = stop - keep
        return chunk
