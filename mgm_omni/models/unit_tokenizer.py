"""Discrete speech units at 25 Hz: a layer of a frozen Whisper encoder, pooled, then a k-means codebook or a
learned finite scalar quantiser (FSQ).

For mouths without the official S3 tokenizer (``speech_tokenizer_v2.onnx``). A 16 kHz clip goes through
the 80-bin Whisper log-mel of the clip itself (no padding to 30 s), Whisper's conv1 / conv2 (50 Hz),
the first ``layer`` transformer layers with positions ``[:T]``, an average pool 2:1 (25 Hz), the
standardisation the codebook was fitted with, and the nearest centroid. Clips longer than 30 s are cut into
30 s blocks (Whisper's position table), each tokenised on its own, as the S3 tokenizer does.

Two quantisers:

* ``kmeans``: the nearest of K centroids of the standardised features (``recipes/speech_tokenizer.py``).
* ``fsq``: a small convolutional pre-net maps the standardised features to a few scalars, each bounded and
  rounded to one of ``levels[i]`` values; the unit is the mixed-radix number of the rounded values
  (K = prod(levels)). The pre-net is trained with a CTC phoneme loss and a mel loss through the quantiser
  (``recipes/speech_tokenizer_fsq.py``), so the units are made to carry the phonemes.

One state dict holds everything (``encoder.*`` with Hugging Face Whisper names for the kept layers,
``mean`` / ``std`` (d,), ``centroids`` (K, d) or ``fsq.*`` + ``fsq_levels``, and the scalars ``layer``,
``num_units``, ``heads``), so the voice front-end and the data extraction run the same module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.audio import WHISPER_128, MelConfig, log_mel
from mgm_omni.checkpoint import CheckpointError, load_state_dict
from mgm_omni.models.audio_encoder import AudioEncoder, AudioEncoderConfig

SAMPLE_RATE = 16000
SAMPLES_PER_UNIT = 640  # 16 kHz / 25 Hz
BLOCK_SECONDS = 30  # Whisper's 1500 positions at 50 Hz


class UnitTokenizerError(ValueError):
    """Audio the unit tokenizer cannot read, or a state dict that is not a unit tokenizer."""


@dataclass(frozen=True)
class UnitTokenizerConfig:
    """Shape of the truncated Whisper encoder and of the codebook.

    Args:
        layer: transformer layers run (the features are this layer's output; Whisper base has 6).
        num_units: codebook size K (the SpeechLM's ``tokenizer_speech_size`` is K + 2: eos, pad).
    """

    d_model: int = 512
    heads: int = 8
    ffn: int = 2048
    n_mels: int = 80
    layer: int = 4
    num_units: int = 512
    max_positions: int = 1500

    def __post_init__(self) -> None:
        for name in ("d_model", "heads", "ffn", "n_mels", "layer", "num_units", "max_positions"):
            if getattr(self, name) <= 0:
                raise UnitTokenizerError(f"UnitTokenizerConfig.{name} must be > 0, got {getattr(self, name)}")

    def encoder_config(self) -> AudioEncoderConfig:
        return AudioEncoderConfig(model_type="whisper", d_model=self.d_model, encoder_layers=self.layer,
                                  encoder_attention_heads=self.heads, encoder_ffn_dim=self.ffn,
                                  num_mel_bins=self.n_mels, max_source_positions=self.max_positions)

    @property
    def mel(self) -> MelConfig:
        """The Whisper log-mel at this encoder's bin count (80 for base, 128 for large-v3)."""
        return replace(WHISPER_128, n_mels=self.n_mels)


def units_for_samples(num_samples: int) -> int:
    """Units a block of ``num_samples`` 16 kHz samples gives: 100 Hz mel -> 50 Hz conv2 -> 25 Hz pool."""
    mel_frames = num_samples // WHISPER_128.hop_length
    return (mel_frames + 1) // 2 // 2


class FSQ(nn.Module):
    """Finite scalar quantisation: (..., D) reals -> rounded values in [-1, 1] and their (...,) unit ids.

    Each dimension i is bounded by a tanh to ``levels[i]`` steps and rounded (straight-through gradient in
    training); the id is the mixed-radix number of the steps, dimension 0 the least significant.
    """

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        if not levels or min(levels) < 2:
            raise UnitTokenizerError(f"FSQ levels must be >= 2 each, got {levels}")
        lv = torch.tensor(levels, dtype=torch.int64)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.cat([lv.new_ones(1), lv[:-1]]), 0), persistent=False)

    @property
    def size(self) -> int:
        return int(self.levels.prod())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lv = self.levels.to(z.dtype)
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = (self.levels % 2 == 0).to(z.dtype) * 0.5
        bounded = torch.tanh(z + torch.atanh(offset / half)) * half - offset
        rounded = bounded + (bounded.round() - bounded).detach()
        steps = rounded.detach().round().long() + self.levels // 2  # 0 .. levels - 1
        return rounded / (self.levels // 2).to(z.dtype), (steps * self.basis).sum(-1)

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """(...,) unit ids -> (..., D) the values :meth:`forward` gives for them."""
        steps = ids[..., None] // self.basis % self.levels
        return (steps - self.levels // 2).float() / (self.levels // 2).float()


class FSQPreNet(nn.Module):
    """(B, T, d) standardised features -> (B, T, D) scalars for :class:`FSQ`: a projection, residual
    convolution blocks (pre-norm, GELU; kernel 3: one unit, 40 ms, either side per block) and a projection to
    the D dimensions. The FSQ tokenizer's training recipe uses the same stack as its decoder."""

    def __init__(self, d_in: int, hidden: int, blocks: int, dims: int, kernel: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(blocks))
        self.out = nn.Linear(hidden, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, conv in zip(self.norms, self.convs):
            h = h + conv(F.gelu(norm(h)).transpose(1, 2)).transpose(1, 2)
        return self.out(h)


class WhisperUnitTokenizer(nn.Module):
    """16 kHz wave -> (T25,) int64 unit ids (see the module docstring).

    ``fsq_levels`` (with ``fsq_hidden`` / ``fsq_blocks``) selects the FSQ quantiser; none selects k-means.
    """

    def __init__(self, cfg: UnitTokenizerConfig, fsq_levels: list[int] | None = None, fsq_hidden: int = 256,
                 fsq_blocks: int = 2) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder_config(), frozen=True)
        self.register_buffer("mean", torch.zeros(cfg.d_model))
        self.register_buffer("std", torch.ones(cfg.d_model))
        if fsq_levels is None:
            self.register_buffer("centroids", torch.zeros(cfg.num_units, cfg.d_model))
            self.fsq = None
        else:
            self.quantiser = FSQ(list(fsq_levels))
            if self.quantiser.size != cfg.num_units:
                raise UnitTokenizerError(f"FSQ levels {list(fsq_levels)} give {self.quantiser.size} units, "
                                         f"the config says {cfg.num_units}")
            self.fsq = FSQPreNet(cfg.d_model, fsq_hidden, fsq_blocks, len(fsq_levels))

    @torch.no_grad()
    def pooled_features(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, T100) log-mel of at most 30 s -> (T25, d) layer-``layer`` features (not standardised)."""
        return self.pooled_layers(mel, [self.cfg.layer])[self.cfg.layer]

    @torch.no_grad()
    def pooled_layers(self, mel: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        """(n_mels, T100) log-mel of at most 30 s -> ``{layer: (T25, d)}`` pooled outputs of the given layers
        (1-based, at most ``cfg.layer``), from one pass of the encoder."""
        enc = self.encoder
        x = mel.to(enc.conv1.weight)[None]  # (1, n_mels, T100)
        x = F.gelu(enc.conv1(x))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (1, T50, d)
        if x.shape[1] > self.cfg.max_positions:
            raise UnitTokenizerError(f"{x.shape[1]} encoder frames exceed the {self.cfg.max_positions} positions")
        x = x + enc.embed_positions.weight[: x.shape[1]]
        out = {}
        for i, layer in enumerate(enc.layers, 1):
            x = layer(x)
            if i in layers:
                out[i] = F.avg_pool1d(x.transpose(1, 2), 2, 2)[0].transpose(0, 1).float()  # (T25, d)
        return out

    def features(self, wave16k: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz float wave -> (T25, d) raw pooled features, 30 s blocks concatenated."""
        wave16k = torch.as_tensor(wave16k)
        if wave16k.dim() != 1 or not wave16k.is_floating_point():
            raise UnitTokenizerError(f"expected a mono float (S,) wave at 16 kHz, got {wave16k.dtype} "
                                     f"{tuple(wave16k.shape)}")
        if wave16k.shape[0] < SAMPLES_PER_UNIT:
            raise UnitTokenizerError(f"clip of {wave16k.shape[0]} samples is shorter than one unit "
                                     f"({SAMPLES_PER_UNIT} samples = 40 ms)")
        block = BLOCK_SECONDS * SAMPLE_RATE
        parts = []
        for start in range(0, wave16k.shape[0], block):
            piece = wave16k[start:start + block]
            if piece.shape[0] >= SAMPLES_PER_UNIT:  # a shorter tail gives no unit
                parts.append(self.pooled_features(log_mel(piece, self.cfg.mel)))
        return torch.cat(parts)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    def assign(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, d) standardised features -> (T,) int64 unit: the nearest centroid (squared L2) or the FSQ id."""
        if self.fsq is not None:
            return self.quantiser(self.fsq(feats[None]))[1][0]
        c = self.centroids
        dist = feats.square().sum(1, keepdim=True) - 2 * feats @ c.T + c.square().sum(1)  # (T, K)
        return dist.argmin(1)

    @torch.no_grad()
    def forward(self, wave16k: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz wave -> (T25,) int64 units."""
        return self.assign(self.standardise(self.features(wave16k)))

    # ------------------------------------------------------------------------------- state

    def unit_state(self) -> dict[str, torch.Tensor]:
        """Everything needed to rebuild this tokenizer (see :meth:`from_state`)."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for name in ("layer", "num_units", "heads", "ffn", "max_positions"):
            state[name] = torch.tensor(getattr(self.cfg, name), dtype=torch.int64)
        if self.fsq is not None:
            state["fsq_levels"] = self.quantiser.levels.clone()
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> WhisperUnitTokenizer:
        """Rebuild from :meth:`unit_state` (for instance read from a ``.safetensors`` file)."""
        scalars = ("layer", "num_units", "heads", "ffn", "max_positions", "fsq_levels")
        fsq = "fsq_levels" in state
        needed = scalars[:5] + ("mean", "std", "encoder.conv1.weight") + (("fsq.inp.weight",) if fsq else ("centroids",))
        missing = [k for k in needed if k not in state]
        if missing:
            raise UnitTokenizerError(f"not a unit tokenizer state: missing {missing}")
        d_model, n_mels, _ = state["encoder.conv1.weight"].shape
        cfg = UnitTokenizerConfig(d_model=int(d_model), heads=int(state["heads"]), ffn=int(state["ffn"]),
                                  n_mels=int(n_mels), layer=int(state["layer"]),
                                  num_units=int(state["num_units"]), max_positions=int(state["max_positions"]))
        if fsq:
            blocks = len({k.split(".")[2] for k in state if k.startswith("fsq.convs.")})
            model = cls(cfg, state["fsq_levels"].tolist(), int(state["fsq.inp.weight"].shape[0]), blocks)
        else:
            model = cls(cfg)
        weights = {k: v for k, v in state.items() if k not in scalars}
        try:
            model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
        except RuntimeError as exc:
            raise UnitTokenizerError(f"unit tokenizer state does not fit its own config: {exc}") from None
        return model.eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> WhisperUnitTokenizer:
        """Load the ``.safetensors`` file that ``recipes/speech_tokenizer.py`` writes."""
        try:
            return cls.from_state(load_state_dict(path))
        except CheckpointError as exc:
            raise UnitTokenizerError(str(exc)) from exc


def truncated_encoder_state(whisper_state: dict[str, torch.Tensor], layer: int) -> dict[str, torch.Tensor]:
    """``encoder.*`` tensors of the first ``layer`` layers from an encoder state with ``AudioEncoder`` names
    (``conv1.weight``, ``layers.{i}.*``, ...); the final ``layer_norm`` is kept only for the module's shape."""
    out = {}
    for k, v in whisper_state.items():
        parts = k.split(".")
        if parts[0] == "layers" and int(parts[1]) >= layer:
            continue
        out[f"encoder.{k}"] = v
    if f"encoder.layers.{layer - 1}.fc1.weight" not in out:
        raise UnitTokenizerError(f"the encoder has fewer than {layer} layers")
    return out
