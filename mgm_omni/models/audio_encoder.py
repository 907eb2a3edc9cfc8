"""Whisper-style audio encoders and the dual tower of the understanding track (spec §4.3).

One ``AudioEncoder`` covers both upstream encoders; they differ only by config values:

* ``model_type "whisper"`` (Hugging Face ``WhisperEncoder``): conv1 (k3) -> conv2 (k3, stride 2) -> learned
  positions -> pre-norm layers -> LayerNorm, giving (B, 1500, d) at 50 Hz for a 30 s window;
* ``model_type "qwen2_audio_encoder"`` (``Qwen2AudioEncoder``): the same, with ``AvgPool1d(2, 2)`` before the
  final LayerNorm, giving (B, 750, d) at 25 Hz.

``DualAudioTower`` runs the main (Qwen2-Audio) and auxiliary (Whisper) encoders on the same mel window.
Parameter names are Hugging Face's, so an upstream ``model.safetensors`` loads with ``checkpoint.load_into``.
Encoders are frozen by default, as the official towers are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.config import ConfigError, JsonConfig

# Hugging Face builds every encoder LayerNorm with the torch default eps; no config field carries it.
_LN_EPS = 1e-5


class AudioEncoderError(ValueError):
    """Encoder input with the wrong rank, mel count or number of frames."""


@dataclass
class AudioEncoderConfig(JsonConfig):
    """Encoder fields of a Hugging Face ``WhisperConfig`` or ``Qwen2AudioEncoderConfig`` ``config.json``.

    Decoder and training keys of a full Whisper config are kept in ``extra`` (exact round trip).
    Defaults are the Qwen2-Audio-7B encoder (= Whisper large-v3 encoder plus pooling).
    """

    model_type: str = "qwen2_audio_encoder"
    d_model: int = 1280
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    num_mel_bins: int = 128
    max_source_positions: int = 1500
    activation_function: str = "gelu"

    # Temporal average-pool stride after the layers, by model type (versions differ by values, not classes).
    POOL_BY_TYPE: ClassVar[dict[str, int]] = {"whisper": 1, "qwen2_audio_encoder": 2}

    def __post_init__(self) -> None:
        if self.model_type == "qwen2_audio":
            raise ConfigError("model_type 'qwen2_audio' is the full Qwen2-Audio model: "
                              "pass its 'audio_config' block")
        if self.model_type not in self.POOL_BY_TYPE:
            raise ConfigError(f"audio encoder model_type must be one of {sorted(self.POOL_BY_TYPE)}, "
                              f"got {self.model_type!r}")
        for name in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                     "num_mel_bins", "max_source_positions"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.encoder_attention_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by encoder_attention_heads "
                              f"({self.encoder_attention_heads})")
        if self.activation_function != "gelu":
            raise ConfigError(f"only activation_function 'gelu' is supported, "
                              f"got {self.activation_function!r}")
        if self.max_source_positions < self.pool_stride:
            raise ConfigError(f"max_source_positions ({self.max_source_positions}) is shorter than "
                              f"the pool stride")

    @property
    def pool_stride(self) -> int:
        return self.POOL_BY_TYPE[self.model_type]

    @property
    def input_frames(self) -> int:
        """Mel frames the encoder takes: conv2 halves them into ``max_source_positions`` (3000 for 30 s)."""
        return 2 * self.max_source_positions

    @property
    def output_positions(self) -> int:
        """Frames per window the encoder returns (1500 Whisper, 750 Qwen2-Audio)."""
        return self.max_source_positions // self.pool_stride


class EncoderAttention(nn.Module):
    """Bidirectional multi-head self-attention; ``k_proj`` has no bias, as in Whisper."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # Scale q before the product (not inside softmax) as the reference does: same rounding.
        q = (self.q_proj(x) * self.head_dim**-0.5).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, hd)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.self_attn = EncoderAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps=_LN_EPS)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:
            # fp16 (the official tower dtype) can overflow in late layers; clamp as upstream does.
            limit = torch.finfo(torch.float16).max - 1000
            x = x.clamp(-limit, limit)
        return x


class AudioEncoder(nn.Module):
    """Whisper / Qwen2-Audio encoder over one padded 30 s mel window per batch item.

    Args:
        cfg: encoder hyper-parameters; ``cfg.pool_stride`` 2 adds the Qwen2-Audio average pooling.
        frozen: set ``requires_grad=False`` on every parameter (the default, as in the official towers).
    """

    def __init__(self, cfg: AudioEncoderConfig, frozen: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, d)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(cfg.max_source_positions, d))
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(d, eps=_LN_EPS)
        self.embed_positions.requires_grad_(False)  # fixed in both upstream models
        if frozen:
            self.requires_grad_(False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, num_mel_bins, 2 * max_source_positions) log-mel -> (B, output_positions, d_model)."""
        cfg = self.cfg
        if features.dim() != 3 or tuple(features.shape[1:]) != (cfg.num_mel_bins, cfg.input_frames):
            raise AudioEncoderError(
                f"audio encoder expects (batch, {cfg.num_mel_bins}, {cfg.input_frames}) mel features "
                f"(a full padded window), got {tuple(features.shape)}")
        x = features.to(dtype=self.conv1.weight.dtype, device=self.conv1.weight.device)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, max_source_positions, d)
        x = x + self.embed_positions.weight
        for layer in self.layers:
            x = layer(x)
        if cfg.pool_stride > 1:
            x = F.avg_pool1d(x.transpose(1, 2), cfg.pool_stride, cfg.pool_stride)
            x = x.transpose(1, 2)  # (B, max_source_positions / 2, d)
        return self.layer_norm(x)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) sin|cos position table of Whisper (the value upstream checkpoints store)."""
    if channels % 2:
        raise ConfigError(f"sinusoidal positions need an even width, got {channels}")
    step = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-step * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's tensors from an upstream state dict, with ``AudioEncoder`` names.

    Accepts a bare encoder (``Qwen2AudioEncoder``/``WhisperEncoder``: ``conv1.weight``), ``WhisperModel``
    (``encoder.conv1.weight``) or ``WhisperForConditionalGeneration`` (``model.encoder.conv1.weight``);
    decoder tensors are left out.
    """
    for prefix in ("model.encoder.", "encoder.", ""):
        if prefix + "conv1.weight" in state:
            if not prefix:
                return dict(state)
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    raise AudioEncoderError("state dict holds no audio encoder (no conv1.weight under '', 'encoder.' or "
                            "'model.encoder.')")


def main_encoder_name(mm_speech_tower: str) -> str:
    """Repository of the main encoder named by ``config.mm_speech_tower`` (spec §4.3, issue #1).

    A name containing "dual" selects the dual tower; the literal ``Dual-`` is removed to get the main encoder,
    e.g. ``wcy1122/Dual-Qwen2A-7B-Encoder`` -> ``wcy1122/Qwen2A-7B-Encoder``.
    """
    return mm_speech_tower.replace("Dual-", "") if "dual" in mm_speech_tower.lower() else mm_speech_tower


class DualAudioTower(nn.Module):
    """Main (Qwen2-Audio, 25 Hz) and auxiliary (Whisper, 50 Hz) encoders over the same mel windows.

    Keys: ``speech_tower.*`` and ``speech_tower_aux.*`` (under ``model.speech_tower.`` in an MGM-Omni
    checkpoint).
    """

    def __init__(self, main_cfg: AudioEncoderConfig, aux_cfg: AudioEncoderConfig,
                 frozen: bool = True) -> None:
        super().__init__()
        if main_cfg.num_mel_bins != aux_cfg.num_mel_bins or main_cfg.input_frames != aux_cfg.input_frames:
            raise ConfigError(
                f"dual tower encoders must take the same mel window: main ({main_cfg.num_mel_bins}, "
                f"{main_cfg.input_frames}) vs aux ({aux_cfg.num_mel_bins}, {aux_cfg.input_frames})")
        if aux_cfg.output_positions % main_cfg.output_positions:
            raise ConfigError(f"aux frames per window ({aux_cfg.output_positions}) must be a multiple of "
                              f"the main encoder's ({main_cfg.output_positions})")
        self.speech_tower = AudioEncoder(main_cfg, frozen=frozen)
        self.speech_tower_aux = AudioEncoder(aux_cfg, frozen=frozen)

    @property
    def main_cfg(self) -> AudioEncoderConfig:
        return self.speech_tower.cfg

    @property
    def aux_cfg(self) -> AudioEncoderConfig:
        return self.speech_tower_aux.cfg

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, n_mels, 3000) windows -> main (N, 750, d_main) and aux (N, 1500, d_aux) features."""
        return self.speech_tower(features), self.speech_tower_aux(features)
