"""HiFT vocoder of CosyVoice2 (``HiFTGenerator``): 80-bin log-mel at 50 fps in, 24 kHz audio out.

Neural source filter + iSTFT: a conv F0 predictor reads the mel, the F0 drives a harmonic sine
source (``m_source``), the source's STFT is fused into a HiFi-GAN upsampler at every scale, and the
last conv predicts log-magnitude and phase for a small iSTFT (n_fft 16, hop 4). Parameter names
follow the official module so ``hift.pt`` loads after :func:`fold_weight_norm`.

Randomness: the source draws initial harmonic phases and additive noise from torch's RNG (the
global one, as upstream, or ``generator``). Draw order, shapes and memory layout are those of the
official code, so ``torch.manual_seed(s)`` before :meth:`HiFTGenerator.inference` reproduces an
official call with the same seed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.config import ConfigError, _require
from mgm_omni.models.vocoder import ResBlock, VocoderError, check_mel, fold_weight_norm, mrf


@dataclass
class HiFTConfig:
    """Hyper-parameters of ``HiFTGenerator`` + ``ConvRNNF0Predictor``; defaults are CosyVoice2-0.5B's."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1  # sine amplitude
    nsf_sigma: float = 0.003  # noise std in voiced regions
    nsf_voiced_threshold: float = 10.0  # Hz; F0 at or below is unvoiced
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    def __post_init__(self) -> None:
        self.upsample_rates = tuple(self.upsample_rates)
        self.upsample_kernel_sizes = tuple(self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(d) for d in self.resblock_dilation_sizes)
        self.source_resblock_kernel_sizes = tuple(self.source_resblock_kernel_sizes)
        self.source_resblock_dilation_sizes = tuple(tuple(d) for d in self.source_resblock_dilation_sizes)
        rates, kernels = self.upsample_rates, self.upsample_kernel_sizes
        n_up = len(rates)
        _require(
            self.sampling_rate != 22050, "HiFTConfig: 22050 Hz selects CosyVoice1's source, not implemented"
        )
        _require(
            min(self.sampling_rate, self.in_channels, self.f0_cond_channels) > 0,
            "HiFTConfig: sizes must be > 0",
        )
        _require(n_up > 0 and len(kernels) == n_up, "HiFTConfig: upsample_rates/kernel_sizes lengths differ")
        _require(all(k >= u > 0 for u, k in zip(rates, kernels)), "HiFTConfig: need kernel >= rate > 0")
        _require(self.base_channels % 2**n_up == 0, f"HiFTConfig: base_channels must divide by 2**{n_up}")
        _require(
            len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes) > 0,
            "HiFTConfig: resblock kernel/dilation lists differ",
        )
        _require(
            len(self.source_resblock_kernel_sizes) == len(self.source_resblock_dilation_sizes) == n_up,
            "HiFTConfig: need one source resblock (kernel, dilations) per upsample",
        )
        _require(
            self.istft_n_fft > 0 and self.istft_n_fft % 2 == 0 and 0 < self.istft_hop_len <= self.istft_n_fft,
            "HiFTConfig: istft needs an even n_fft and 0 < hop_len <= n_fft",
        )
        _require(
            self.nb_harmonics >= 0 and self.audio_limit > 0,
            "HiFTConfig: need nb_harmonics >= 0, audio_limit > 0",
        )

    @property
    def hop_length(self) -> int:
        """Output samples per mel frame (480 for CosyVoice2)."""
        return math.prod(self.upsample_rates) * self.istft_hop_len

    @classmethod
    def from_kwargs(cls, hift: dict[str, Any], f0_predictor: dict[str, Any] | None = None) -> HiFTConfig:
        """Build from the official ``HiFTGenerator`` constructor kwargs.

        ``f0_predictor`` (``ConvRNNF0Predictor`` kwargs) may be given apart or nested in ``hift``, as
        plain kwargs or as ``{"class": ..., "kwargs": {...}}``; ``_target_``-style marker keys
        (leading underscore) are ignored. Unknown kwargs raise :class:`ConfigError`.
        """
        kw = {k: v for k, v in hift.items() if not k.startswith("_")}
        nested = kw.pop("f0_predictor", None)
        f0 = f0_predictor if f0_predictor is not None else nested
        istft = kw.pop("istft_params", None)
        if istft is not None:
            kw["istft_n_fft"], kw["istft_hop_len"] = istft["n_fft"], istft["hop_len"]
        if f0 is not None:
            f0 = {k: v for k, v in f0.get("kwargs", f0).items() if not k.startswith("_")}
            if f0.get("num_class", 1) != 1 or f0.get("in_channels", kw.get("in_channels", 80)) != kw.get(
                "in_channels", 80
            ):
                raise ConfigError(f"HiFTConfig: unsupported f0 predictor kwargs {f0}")
            kw["f0_cond_channels"] = f0.get("cond_channels", 512)
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ConfigError(f"HiFTConfig: {exc}") from exc

    @classmethod
    def from_resolved(cls, obj: dict[str, Any]) -> HiFTConfig:
        """Build from ``{"kwargs": {...}, "f0_predictor": {"kwargs": {...}}}`` (resolved HyperPyYAML json)."""
        return cls.from_kwargs(obj["kwargs"], obj.get("f0_predictor"))


class ConvRNNF0Predictor(nn.Module):
    """F0 in Hz per mel frame: five k=3 convs with ELU, then a linear head; ``|.|`` keeps it >= 0."""

    def __init__(self, in_channels: int, cond_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [
                nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1),
                nn.ELU(),
            ]
        self.condnet = nn.Sequential(*layers)  # upstream indices: convs at 0, 2, 4, 6, 8
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.condnet(mel).transpose(1, 2)  # (B, T, C)
        return torch.abs(self.classifier(h).squeeze(-1))  # (B, T)


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise excitation from a sample-rate F0 (upstream ``SourceModuleHnNSF2`` + ``SineGen2``).

    The phase is integrated at frame rate (the per-sample increments are linearly resampled down by
    ``upsample_scale``, cumulated, then resampled back up), which keeps a float32 cumsum short.
    """

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.sampling_rate = cfg.sampling_rate
        self.upsample_scale = cfg.hop_length
        self.dim = cfg.nb_harmonics + 1
        self.sine_amp = cfg.nsf_alpha
        self.noise_std = cfg.nsf_sigma
        self.voiced_threshold = cfg.nsf_voiced_threshold
        self.l_linear = nn.Linear(self.dim, 1)  # merges the harmonics

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """f0: (B, L, 1) in Hz at the audio rate -> excitation (B, L, 1)."""
        batch, length, _ = f0.shape
        harmonics = torch.arange(1, self.dim + 1, dtype=f0.dtype, device=f0.device)
        rad = (f0 * harmonics / self.sampling_rate) % 1  # (B, L, H) cycles per sample
        rand_ini = torch.rand(batch, self.dim, generator=generator, device=f0.device, dtype=f0.dtype)
        rand_ini[:, 0] = 0  # random initial phase for the overtones only
        # upstream adds it to sample 0, which the linear downsampling below never reads (frame t
        # interpolates samples 480t+239 and 480t+240), so the phases start at 0; kept for the RNG
        rad[:, 0, :] = rad[:, 0, :] + rand_ini
        scale = float(self.upsample_scale)
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear")  # (B, H, T)
        phase = torch.cumsum(rad.transpose(1, 2), dim=1) * 2 * math.pi  # (B, T, H)
        phase = F.interpolate(phase.transpose(1, 2) * scale, scale_factor=scale, mode="linear")  # (B, H, L)
        # viewed as (B, L, H) but stored as (B, H, L): this layout decides where each noise draw lands
        phase = phase.transpose(1, 2)
        sines = torch.sin(phase) * self.sine_amp
        uv = (f0 > self.voiced_threshold).to(f0.dtype)  # (B, L, 1)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        # torch.randn_like(sines) as upstream: same draws, filled in the (B, H, L) memory order
        noise = noise_amp * torch.empty_like(sines).normal_(generator=generator)
        sines = sines * uv + noise
        # upstream also draws an unused (B, L, 1) noise here; replay it so later draws stay in step
        torch.empty_like(uv).normal_(generator=generator)
        return torch.tanh(self.l_linear(sines))


class HiFTGenerator(nn.Module):
    """CosyVoice2 HiFT: ``inference(mel, cache_source) -> (speech, source)``."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        base, n_fft = cfg.base_channels, cfg.istft_n_fft
        self.m_source = SourceModuleHnNSF(cfg)
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        # the source STFT (hop istft_hop_len) is brought to each upsampler's rate by a strided conv
        down = [1, *cfg.upsample_rates[::-1][:-1]]
        cum = [math.prod(down[: i + 1]) for i in range(len(down))][::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(
            zip(cum, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)
        ):
            ch = base // 2 ** (i + 1)
            # a 1x1 conv at the full rate, else a 2u-wide conv with stride u
            kernel, stride, pad = (1, 1, 0) if u == 1 else (u * 2, u, u // 2)
            self.source_downs.append(nn.Conv1d(n_fft + 2, ch, kernel, stride, padding=pad))
            self.source_resblocks.append(ResBlock(ch, k, d, snake=True))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d, snake=True)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(base // 2 ** len(self.ups), n_fft + 2, 7, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        # scipy's periodic Hann computed in float64, cast like upstream's numpy window
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float()
        self.register_buffer("stft_window", window, persistent=False)

    def source(
        self, mel: torch.Tensor, generator: torch.Generator | None = None, f0: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Excitation (B, 1, T·hop) for a checked mel (B, n_mels, T); ``f0`` (B, T) replaces the predictor's."""
        if f0 is None:
            f0 = self.f0_predictor(mel)  # (B, T)
        f0 = F.interpolate(f0[:, None], scale_factor=float(self.cfg.hop_length), mode="nearest")  # (B, 1, L)
        return self.m_source(f0.transpose(1, 2), generator).transpose(1, 2)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Waveform (B, T·hop) from a checked mel (B, n_mels, T) and its excitation (B, 1, T·hop)."""
        cfg, n_fft, hop = self.cfg, self.cfg.istft_n_fft, self.cfg.istft_hop_len
        spec = torch.stft(source.squeeze(1), n_fft, hop, n_fft, window=self.stft_window, return_complex=True)
        spec = torch.view_as_real(spec)  # (B, n_fft/2+1, frames, 2)
        s_stft = torch.cat([spec[..., 0], spec[..., 1]], dim=1)  # (B, n_fft+2, frames)

        x = self.conv_pre(mel)
        n_kernels = len(cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # one more frame: the STFT is centred
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            x = mrf(self.resblocks[i * n_kernels : (i + 1) * n_kernels], x)
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as upstream
        n_bins = n_fft // 2 + 1
        magnitude = torch.exp(x[:, :n_bins]).clamp(max=1e2)
        phase = torch.sin(x[:, n_bins:])  # upstream squashes the phase with sin; keep it
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wave = torch.istft(spec, n_fft, hop, n_fft, window=self.stft_window)  # (B, T·hop)
        return wave.clamp(-cfg.audio_limit, cfg.audio_limit)

    @torch.no_grad()
    def inference(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        f0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocode a log-mel.

        Args:
            mel: (B, 80, T) or (80, T) natural-log mel at 50 fps.
            cache_source: (B, 1, n) excitation from the previous streaming call; it overwrites the
                first n source samples so the sine phase stays continuous across calls.
            generator: RNG for the source's phases and noise; None uses torch's global RNG.
            f0: (B, T) F0 in Hz per mel frame to use instead of the predictor's (stage-by-stage
                checks against a reference F0: phase integration amplifies tiny F0 differences).

        Returns:
            speech (B, T·hop) in [-audio_limit, audio_limit] and the excitation source (B, 1, T·hop).
        """
        mel = check_mel(mel, self.cfg.in_channels).to(self.conv_pre.weight.dtype)
        if f0 is not None and tuple(f0.shape) != (mel.shape[0], mel.shape[-1]):
            raise VocoderError(f"f0 must be (B, T) = {(mel.shape[0], mel.shape[-1])}, got {tuple(f0.shape)}")
        source = self.source(mel, generator, None if f0 is None else f0.to(mel.dtype))
        if cache_source is not None and cache_source.numel() > 0:
            n = cache_source.shape[-1]
            fits = cache_source.dim() == 3 and cache_source.shape[:2] == (source.shape[0], 1)
            if not fits or n > source.shape[-1]:
                raise VocoderError(
                    f"cache_source must be (B, 1, n<={source.shape[-1]}), got {tuple(cache_source.shape)}"
                )
            source[:, :, :n] = cache_source
        return self.decode(mel, source), source


def load_hift(path: str | Path, cfg: HiFTConfig | None = None) -> HiFTGenerator:
    """A HiFT from an official ``hift.pt`` (or a safetensors copy), in eval mode, weight norm folded.

    Accepts parametrization (``.original0/1``) or ``weight_g/_v`` names and a ``generator.`` prefix.
    """
    model = HiFTGenerator(cfg or HiFTConfig())
    state = fold_weight_norm(load_state_dict(path, strip_prefix="generator."))
    load_into(model, state)
    return model.eval()
