"""Kaldi-compatible log mel filterbank ("fbank") in torch, without torchaudio.

The CAMPPlus speaker embedder was trained on ``torchaudio.compliance.kaldi.fbank`` features, which reproduce Kaldi's
``compute-fbank-feats``. This module implements the same computation from Kaldi's definition:

1. frames of ``frame_length_ms`` every ``frame_shift_ms`` (``snip_edges``: only whole frames; otherwise
   ``(N + shift // 2) // shift`` frames centred on the shifts, with the wave reflected at its ends);
2. per frame: optional dither, DC-offset removal, pre-emphasis ``x[i] - c * x[i-1]`` (``x[0] - c * x[0]``), window
   (Povey = Hann ** 0.85 by default), zero-pad to the next power of two;
3. power spectrum, Kaldi mel banks (``mel = 1127 ln(1 + f / 700)``, triangles on the mel axis between ``low_freq``
   and ``high_freq``, the Nyquist bin unused), log with a floor at float32 epsilon.

Kaldi reads 16-bit integer samples, torchaudio whatever it is given; CosyVoice passes float audio in [-1, 1]. The
scale only shifts the log energies by a constant, which the per-utterance mean subtraction of the x-vector
recipe removes (except in frames that hit the floor, e.g. digital silence).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

_WINDOWS = ("povey", "hanning", "hamming", "rectangular", "blackman")
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # Kaldi's log floor: std::numeric_limits<float>::epsilon()


class FbankError(ValueError):
    """A waveform or a setting that the Kaldi fbank cannot use."""


@dataclass(frozen=True)
class FbankConfig:
    """Settings of ``kaldi_fbank``: Kaldi's defaults, except ``num_mel_bins`` (Kaldi: 23) and ``dither`` (Kaldi:
    1.0 on the int16 scale), which are set to what CAMPPlus / CosyVoice use (80 bins, no dither).

    ``high_freq`` <= 0 is an offset from the Nyquist frequency (Kaldi's convention; 0 means Nyquist).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    blackman_coeff: float = 0.42
    round_to_power_of_two: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    snip_edges: bool = True
    use_power: bool = True
    use_log_fbank: bool = True
    log_floor: float = FLOAT32_EPS

    def __post_init__(self):
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise FbankError(f"FbankConfig.sample_rate must be a positive int, got {self.sample_rate!r}")
        if not isinstance(self.num_mel_bins, int) or self.num_mel_bins < 3:
            raise FbankError(f"FbankConfig.num_mel_bins must be an int >= 3, got {self.num_mel_bins!r}")
        if self.window_size < 2 or self.window_shift < 1:
            raise FbankError(
                f"FbankConfig: frame_length_ms={self.frame_length_ms} and frame_shift_ms={self.frame_shift_ms} "
                f"give {self.window_size}-sample frames every {self.window_shift} samples"
            )
        if self.window_type not in _WINDOWS:
            raise FbankError(f"FbankConfig.window_type must be one of {_WINDOWS}, got {self.window_type!r}")
        if self.dither < 0 or not 0 <= self.preemphasis <= 1 or not self.log_floor > 0:
            raise FbankError("FbankConfig needs dither >= 0, 0 <= preemphasis <= 1 and log_floor > 0")
        nyquist = self.sample_rate / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not 0 <= self.low_freq < high <= nyquist:
            raise FbankError(
                f"FbankConfig needs 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz), "
                f"got low_freq={self.low_freq:g}, high_freq={high:g}"
            )

    @property
    def window_size(self) -> int:
        """Samples per frame (Kaldi truncates ``sample_rate * frame_length_ms / 1000``)."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def padded_window_size(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi makes from ``num_samples`` samples."""
        if self.snip_edges:
            return 0 if num_samples < self.window_size else 1 + (num_samples - self.window_size) // self.window_shift
        return (num_samples + self.window_shift // 2) // self.window_shift


# CAMPPlus x-vector input (CosyVoice2 ``_extract_spk_embedding``): 80 bins, dither 0, everything else Kaldi's.
CAMPPLUS_FBANK = FbankConfig()


def _mel_scale(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def kaldi_mel_banks(cfg: FbankConfig) -> torch.Tensor:
    """Kaldi's triangular mel filters (num_mel_bins, padded_window_size // 2 + 1), float32.

    Triangles are linear on the mel axis (not in Hz) and are not area-normalised. The last (Nyquist) column is
    zero, as Kaldi only weights the first ``padded_window_size // 2`` bins.
    """
    return _mel_banks64(cfg).float()


@functools.lru_cache(maxsize=8)
def _mel_banks64(cfg: FbankConfig) -> torch.Tensor:
    n_fft = cfg.padded_window_size
    nyquist = cfg.sample_rate / 2
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low, mel_high = _mel_scale(torch.tensor([cfg.low_freq, high], dtype=torch.float64)).tolist()
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(cfg.num_mel_bins + 2, dtype=torch.float64)  # left/centre/right per bin
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (num_mel_bins, 1)
    mel = _mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (cfg.sample_rate / n_fft))[None, :]
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    weights = torch.where((mel > left) & (mel < right), torch.minimum(rising, falling), torch.zeros(()))
    return torch.nn.functional.pad(weights, (0, 1))  # (num_mel_bins, n_fft // 2 + 1) float64


@functools.lru_cache(maxsize=8)
def _window(cfg: FbankConfig) -> torch.Tensor:
    n = cfg.window_size
    a = 2 * math.pi / (n - 1)  # Kaldi's windows are symmetric (period N - 1)
    i = torch.arange(n, dtype=torch.float64)
    if cfg.window_type == "povey":
        w = (0.5 - 0.5 * torch.cos(a * i)) ** 0.85
    elif cfg.window_type == "hanning":
        w = 0.5 - 0.5 * torch.cos(a * i)
    elif cfg.window_type == "hamming":
        w = 0.54 - 0.46 * torch.cos(a * i)
    elif cfg.window_type == "blackman":
        b = cfg.blackman_coeff
        w = b - 0.5 * torch.cos(a * i) + (0.5 - b) * torch.cos(2 * a * i)
    else:
        w = torch.ones(n, dtype=torch.float64)
    return w  # float64; cast where used


def _frames(wave: torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    """(num_frames, window_size) view/copy of the frames Kaldi extracts."""
    n, size, shift = wave.shape[0], cfg.window_size, cfg.window_shift
    if cfg.snip_edges:
        return wave.unfold(0, size, shift)
    count = cfg.num_frames(n)
    first = torch.arange(count) * shift + shift // 2 - size // 2  # Kaldi FirstSampleOfFrame
    idx = first[:, None] + torch.arange(size)[None, :]
    # Reflect out-of-range indices about the ends, as often as needed (a short wave may need more than once).
    while bool(((idx < 0) | (idx >= n)).any()):
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    return wave[idx]


def kaldi_fbank(
    wave: torch.Tensor,
    cfg: FbankConfig | None = None,
    generator: torch.Generator | None = None,
    **overrides,
) -> torch.Tensor:
    """Kaldi log mel filterbank features of one mono waveform.

    Args:
        wave: (S,) or (1, S) float waveform at ``cfg.sample_rate`` (any scale; CosyVoice uses [-1, 1]).
        cfg: settings (default ``CAMPPLUS_FBANK``); keyword ``overrides`` replace single fields, e.g.
            ``kaldi_fbank(w, num_mel_bins=40)``.
        generator: random source for ``dither`` > 0.
    Returns:
        (T, num_mel_bins) float32 (float64 for float64 input); T = ``cfg.num_frames(S)``.
    """
    cfg = cfg or CAMPPLUS_FBANK
    if overrides:
        try:
            cfg = dataclasses.replace(cfg, **overrides)
        except TypeError as err:
            raise FbankError(f"kaldi_fbank: unknown setting ({err})") from None
    wave = torch.as_tensor(wave)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1 or not wave.is_floating_point():
        raise FbankError(f"kaldi_fbank expects a float (S,) or (1, S) waveform, got {wave.dtype} {tuple(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise FbankError("kaldi_fbank input contains NaN or Inf samples")
    if cfg.num_frames(wave.shape[0]) == 0:
        raise FbankError(
            f"waveform of {wave.shape[0]} samples is shorter than one {cfg.window_size}-sample fbank frame"
        )
    dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
    frames = _frames(wave.to(dtype), cfg)  # (T, window_size)
    if cfg.dither > 0:
        noise = torch.randn(frames.shape, generator=generator, dtype=torch.float64).to(dtype)
        frames = frames + cfg.dither * noise.to(frames.device)
    if cfg.remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if cfg.preemphasis:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[-1] := x[0], as Kaldi does
        frames = frames - cfg.preemphasis * previous
    frames = frames * _window(cfg).to(frames)
    spec = torch.fft.rfft(frames, n=cfg.padded_window_size, dim=1).abs()  # (T, n_fft // 2 + 1); zero-pads
    if cfg.use_power:
        spec = spec.square()
    mel = spec @ _mel_banks64(cfg).to(spec).T  # (T, num_mel_bins)
    if cfg.use_log_fbank:
        mel = torch.clamp(mel, min=cfg.log_floor).log()
    return mel


def campplus_features(wave16k: torch.Tensor) -> torch.Tensor:
    """CAMPPlus input of one 16 kHz clip: Kaldi fbank (``CAMPPLUS_FBANK``) minus its mean over time, (T, 80)."""
    feats = kaldi_fbank(wave16k, CAMPPLUS_FBANK)
    return feats - feats.mean(dim=0, keepdim=True)
