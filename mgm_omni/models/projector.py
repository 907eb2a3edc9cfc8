"""Information-mining speech projector (``DualMLPSpeechProjector``, spec §4.4).

Each main-encoder frame (25 Hz) attends over the auxiliary-encoder frames of the same time span (2 at 50 Hz),
the result is added to the raw main frame, ``k`` consecutive frames are stacked and a 2-layer MLP maps them to
the LLM width:

    T_A = MLP(stack_k(X_m + softmax(φq(X_m) φk(X_a)ᵀ / √d) φv(X_a)))

Parameter names are the official ones (``dual_query.{0,1}``, ``dual_aux.{0,1}``, ``dual_val.{0,1}``,
``linear1``, ``linear2``), under ``model.mm_speech_projector.`` in an MGM-Omni checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.config import ConfigError, OmniConfig

SUPPORTED_TYPES = ("dual_mlp", "dual_mlp_attn")  # the same class upstream; the only ones matching the paper


class ProjectorInputError(ValueError):
    """Projector inputs whose shapes do not fit the config or each other."""


@dataclass
class SpeechProjectorConfig:
    """Widths and stacking of the dual projector.

    ``main_dim`` is hard-coded 1280 upstream (= ``mm_speech_hidden_size``); ``aux_dim`` is
    ``speech_encoder_hidden_size - 1280``; ``mlp_dim`` is the hard-coded 2048 of the official MLP.
    """

    main_dim: int = 1280
    aux_dim: int = 1280
    ds_rate: int = 5
    out_dim: int = 3584
    mlp_dim: int = 2048
    speech_norm: bool = False
    projector_type: str = "dual_mlp"
    ln_eps: float = 1e-5
    trim_padding: bool = False  # the brain reads no tokens lying wholly in the last window's zero padding

    def __post_init__(self) -> None:
        if self.projector_type not in SUPPORTED_TYPES:
            raise ConfigError(f"mm_speech_projector_type {self.projector_type!r} is not supported "
                              f"(supported: {', '.join(SUPPORTED_TYPES)})")
        for name in ("main_dim", "aux_dim", "ds_rate", "out_dim", "mlp_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"projector {name} must be a positive integer, got {value!r}")
        if not 0 < self.ln_eps < 1:
            raise ConfigError(f"projector ln_eps must be in (0, 1), got {self.ln_eps}")

    @classmethod
    def from_omni(cls, cfg: OmniConfig) -> SpeechProjectorConfig:
        """The projector an MGM-Omni ``config.json`` describes."""
        return cls(main_dim=cfg.mm_speech_hidden_size, aux_dim=cfg.aux_hidden_size,
                   ds_rate=cfg.speech_encoder_ds_rate, out_dim=cfg.hidden_size,
                   speech_norm=bool(cfg.speech_norm), projector_type=cfg.mm_speech_projector_type or "",
                   trim_padding=bool(cfg.speech_trim_padding))

    def tokens_for(self, main_frames: int) -> int:
        """LLM tokens from ``main_frames`` main-encoder frames (trailing ``main_frames % k`` are dropped)."""
        return main_frames // self.ds_rate


class DualMLPSpeechProjector(nn.Module):
    """Fuse main and auxiliary encoder features into LLM-width audio tokens."""

    def __init__(self, cfg: SpeechProjectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, da = cfg.main_dim, cfg.aux_dim
        self.dual_query = nn.Sequential(nn.LayerNorm(d, eps=cfg.ln_eps), nn.Linear(d, d))
        self.dual_aux = nn.Sequential(nn.LayerNorm(da, eps=cfg.ln_eps), nn.Linear(da, d))
        self.dual_val = nn.Sequential(nn.LayerNorm(da, eps=cfg.ln_eps), nn.Linear(da, d))
        self.linear1 = nn.Linear(d * cfg.ds_rate, cfg.mlp_dim)
        self.linear2 = nn.Linear(cfg.mlp_dim, cfg.out_dim)

    def forward(self, x_main: torch.Tensor, x_aux: torch.Tensor) -> torch.Tensor:
        """Main (B, T, main_dim) and aux (B, r·T, aux_dim) features -> (B, T // k, out_dim).

        Main frame t owns aux frames r·t … r·t + r − 1 (r = 2 for 25 Hz main, 50 Hz aux).
        """
        cfg = self.cfg
        if x_main.dim() != 3 or x_aux.dim() != 3 or x_main.shape[0] != x_aux.shape[0]:
            raise ProjectorInputError(f"projector expects (B, T, D) main and aux features with the same B, "
                                      f"got {tuple(x_main.shape)} and {tuple(x_aux.shape)}")
        b, t, d = x_main.shape
        if d != cfg.main_dim or x_aux.shape[2] != cfg.aux_dim:
            raise ProjectorInputError(f"projector widths: expected main {cfg.main_dim} and aux "
                                      f"{cfg.aux_dim}, got {d} and {x_aux.shape[2]}")
        if t < cfg.ds_rate or x_aux.shape[1] % t:
            raise ProjectorInputError(f"projector needs >= {cfg.ds_rate} main frames and a whole number of "
                                      f"aux frames per main frame, got T_main={t}, T_aux={x_aux.shape[1]}")
        x_aux = x_aux.reshape(b, t, x_aux.shape[1] // t, cfg.aux_dim)  # (B, T, r, Da)
        q = self.dual_query(x_main)[:, :, None]  # (B, T, 1, D)
        k = self.dual_aux(x_aux)  # (B, T, r, D)
        v = self.dual_val(x_aux)  # (B, T, r, D)
        scores = (q @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5)).nan_to_num()  # (B, T, 1, r)
        fused = (scores.softmax(-1) @ v)[:, :, 0]  # (B, T, D)
        x = x_main + fused  # residual on the raw main features, not on q
        n_tok = t // cfg.ds_rate
        x = x[:, : n_tok * cfg.ds_rate].reshape(b, n_tok, cfg.ds_rate * d)  # (B, T//k, k·D)
        out = self.linear2(F.relu(self.linear1(x)))  # (B, T//k, out_dim)
        if cfg.speech_norm:
            out = F.normalize(out, dim=-1)
        return out
