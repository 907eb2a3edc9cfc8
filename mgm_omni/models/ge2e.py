"""The GE2E speaker encoder of resemblyzer 0.1.4 (3-layer LSTM 256 over 40-bin mel partials), in plain torch.

Our own mouths condition their flow on this 256-d x-vector. resemblyzer itself cannot be a plain dependency
(its requirements pull ``webrtcvad`` 2.0.10, which fails to import without ``pkg_resources``, and an
unpinned torch), so its forward is written here from its published description and hyper-parameters, and
its pretrained weights (``pretrained.pt``, Apache-2.0) are converted once into the mouth directory.
The steps, on 16 kHz mono audio:

1. loudness: scale up (never down) to an RMS of -30 dBFS;
2. silence trimming: webrtcvad (mode 3) on 30 ms windows, a moving average over 8 windows, rounded,
   dilated by 6 windows on each side; windows outside the mask are cut (``webrtcvad-wheels``);
3. mel power spectrogram: n_fft 400, hop 160, periodic Hann, centred with zero padding, 40 Slaney bins
   over 0-8 kHz (librosa's ``melspectrogram`` defaults), no log;
4. partials of 160 frames every 77 frames (1.3 per second); the last one is kept only if at least 75 %
   of it is audio (the wave is zero-padded to cover it); at least one partial;
5. LSTM over each partial, last hidden state of the top layer -> Linear -> ReLU -> L2 norm; the
   utterance embedding is the L2-normalised mean of the partial embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.audio import MelConfig, mel_filterbank

WEBRTCVAD_PIP = "pip install webrtcvad-wheels==2.0.14.post1"
INT16_MAX = 2**15 - 1


class GE2EError(ValueError):
    """Audio the encoder cannot embed, or a missing VAD package."""


@dataclass(frozen=True)
class GE2EConfig:
    """resemblyzer's hyper-parameters (``hparams.py``)."""

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 40
    partial_frames: int = 160  # 1.6 s
    partials_per_second: float = 1.3
    min_coverage: float = 0.75
    hidden: int = 256
    layers: int = 3
    embedding: int = 256
    target_dbfs: float = -30.0
    vad_window_ms: int = 30
    vad_average: int = 8
    vad_max_silence: int = 6

    @property
    def mel(self) -> MelConfig:
        return MelConfig(self.sample_rate, self.n_fft, self.hop_length, self.n_mels, power=2.0, pad_mode="constant")


class GE2EEncoder(nn.Module):
    """Partials (B, 160, 40) of mel power -> (B, 256) unit-norm embeddings; parameter names as resemblyzer's."""

    def __init__(self, cfg: GE2EConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GE2EConfig()
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden, cfg.layers, batch_first=True)
        self.linear = nn.Linear(cfg.hidden, cfg.embedding)

    def forward(self, partials: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(partials)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1)

    @torch.inference_mode()
    def embed(self, wave16k: torch.Tensor, trim_silence: bool = True) -> torch.Tensor:
        """(256,) unit-norm embedding of a (S,) float waveform at 16 kHz (steps 1-5 of the module docstring)."""
        wave = torch.as_tensor(wave16k).detach().float().reshape(-1).numpy()
        if wave.size == 0 or not np.isfinite(wave).all():
            raise GE2EError("GE2E needs a non-empty, finite waveform")
        wave = normalize_loudness(wave, self.cfg.target_dbfs)
        if trim_silence:
            wave = trim_long_silences(wave, self.cfg)
        if wave.size < self.cfg.hop_length:
            raise GE2EError("GE2E found no speech to embed (the VAD trimmed the clip to nothing)")
        partials = self.partials(torch.from_numpy(wave.astype(np.float32)))
        embeds = self(partials.to(self.linear.weight.dtype)).float()  # (P, 256)
        return F.normalize(embeds.mean(0), dim=0)

    def partials(self, wave: torch.Tensor) -> torch.Tensor:
        """(P, 160, 40) mel-power partials of a preprocessed (S,) wave (step 3-4)."""
        cfg = self.cfg
        n = wave.shape[0]
        n_frames = math.ceil((n + 1) / cfg.hop_length)
        step = int(np.round(cfg.sample_rate / cfg.partials_per_second / cfg.hop_length))
        starts = list(range(0, max(1, n_frames - cfg.partial_frames + step + 1), step))
        last = starts[-1] * cfg.hop_length
        coverage = (n - last) / (cfg.partial_frames * cfg.hop_length)
        if coverage < cfg.min_coverage and len(starts) > 1:
            starts = starts[:-1]
        stop = (starts[-1] + cfg.partial_frames) * cfg.hop_length
        if stop >= n:
            wave = F.pad(wave, (0, stop - n))
        mel = mel_power(wave, cfg.mel).T  # (T, 40)
        return torch.stack([mel[s: s + cfg.partial_frames] for s in starts])


def mel_power(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(n_mels, T) mel power spectrogram (no log) of a (S,) wave, centred with ``cfg.pad_mode`` padding."""
    window = torch.hann_window(cfg.n_fft, periodic=True)
    spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=window, center=True, pad_mode=cfg.pad_mode,
                      return_complex=True).abs().square()  # (n_freqs, T)
    return mel_filterbank(cfg) @ spec


def normalize_loudness(wave: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale up (never down) to ``target_dbfs`` RMS (full scale = int16 max)."""
    wave = wave.astype(np.float32, copy=False)  # float32 throughout, as the reference computes
    rms = np.sqrt(np.mean((wave * INT16_MAX) ** 2))
    if rms == 0:
        return wave
    change = np.float32(target_dbfs) - 20 * np.log10(rms / INT16_MAX)
    return wave if change < 0 else wave * 10 ** (change / 20)


def trim_long_silences(wave: np.ndarray, cfg: GE2EConfig) -> np.ndarray:
    """Cut the 30 ms windows that webrtcvad (smoothed, dilated) finds silent (step 2)."""
    try:
        import webrtcvad
    except ImportError as exc:
        raise GE2EError(f"the GE2E front-end needs webrtcvad ({exc}): {WEBRTCVAD_PIP}") from None
    size = cfg.vad_window_ms * cfg.sample_rate // 1000
    wave = wave[: len(wave) - len(wave) % size]
    if wave.size == 0:
        return wave
    pcm = np.round(wave * INT16_MAX).astype(np.int16)  # wraps past full scale, as the reference does
    vad = webrtcvad.Vad(3)
    flags = np.array([vad.is_speech(pcm[i: i + size].tobytes(), cfg.sample_rate) for i in range(0, len(pcm), size)],
                     dtype=np.float64)
    w = cfg.vad_average
    padded = np.concatenate([np.zeros((w - 1) // 2), flags, np.zeros(w // 2)])
    sums = np.cumsum(padded)
    sums[w:] = sums[w:] - sums[:-w]
    mask = np.round(sums[w - 1:] / w).astype(bool)
    reach = cfg.vad_max_silence // 2  # a structure of max_silence + 1 ones, centred
    grown = np.zeros_like(mask)
    for shift in range(-reach, cfg.vad_max_silence + 1 - reach):
        grown |= np.roll(np.pad(mask, (reach, reach)), shift)[reach: reach + len(mask)]
    return wave[np.repeat(grown, size)]


def ge2e_from_resemblyzer(state: dict[str, torch.Tensor]) -> GE2EEncoder:
    """A :class:`GE2EEncoder` from resemblyzer's ``pretrained.pt`` ``model_state`` (the similarity scalars
    of GE2E training are dropped)."""
    model = GE2EEncoder()
    weights = {k: v.float() for k, v in state.items() if k.startswith(("lstm.", "linear."))}
    model.load_state_dict(weights, strict=True)
    return model.eval()
