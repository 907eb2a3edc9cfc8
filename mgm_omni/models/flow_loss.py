"""The conditional flow-matching loss of the flow's velocity network (training), apart from any ODE solver.

Optimal-transport conditional flow matching as CosyVoice2 trains its ``CausalConditionalCFM``: draw a flow
time t (cosine-scheduled), noise z, the point y_t = (1 - (1 - sigma_min) t) z + t x1 on the path from the
noise to the target mel x1, and regress the estimator's velocity at (y_t, t) on the path's velocity
u = x1 - (1 - sigma_min) z over the valid frames. For classifier-free guidance a random share of the
batch (``cfg_rate``) sees its conditions (mu, spks, cond) zeroed, which is the unconditional branch the
inference solver (``models/flow.py``) extrapolates away from.

Only the estimator's ``forward(x, mu, t, spks, cond, mask)`` is called, so the same network serves the
solver and this loss. Batches padded on the right are exact under a causal attention mask (the estimator's
convolutions are causal, so no valid frame sees a padded one); under full attention (``attn_mask=None``)
padded frames leak into valid ones: batch equal lengths, or pass a causal mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class FlowLossError(ValueError):
    """Inputs of the flow-matching loss with inconsistent shapes or settings."""


@dataclass(frozen=True)
class FlowLossConfig:
    """Training settings of the flow matcher (CosyVoice2 ``cfm_params``).

    Args:
        sigma_min: noise left at t = 1 (1e-6 in the release).
        t_scheduler: ``"cosine"`` (t = 1 - cos(pi/2 u), more samples near the noise, as inference steps)
            or ``"linear"`` (t uniform).
        cfg_rate: share of the batch trained unconditionally (``training_cfg_rate``, 0.2 in the release).
    """

    sigma_min: float = 1e-6
    t_scheduler: str = "cosine"
    cfg_rate: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.sigma_min < 1.0:
            raise FlowLossError(f"sigma_min must be in [0, 1), got {self.sigma_min}")
        if self.t_scheduler not in ("cosine", "linear"):
            raise FlowLossError(f"t_scheduler must be 'cosine' or 'linear', got {self.t_scheduler!r}")
        if not 0.0 <= self.cfg_rate <= 1.0:
            raise FlowLossError(f"cfg_rate must be in [0, 1], got {self.cfg_rate}")


def sample_times(batch: int, scheduler: str, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) training flow times in [0, 1) on the schedule the solver steps along."""
    u = torch.rand(batch, generator=generator, device=device)
    return 1 - torch.cos(u * 0.5 * math.pi) if scheduler == "cosine" else u


def flow_matching_loss(
    estimator,
    x1: torch.Tensor,
    mu: torch.Tensor,
    loss_mask: torch.Tensor,
    spks: torch.Tensor,
    cond: torch.Tensor,
    config: FlowLossConfig | None = None,
    attn_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared velocity error over the valid frames and mel bins (a scalar with gradients).

    Args:
        estimator: the velocity network (``CausalConditionalDecoder`` or anything with its ``forward``).
        x1: (B, M, T) target mel; mu: (B, M, T) encoder output; cond: (B, M, T) prompt-mel condition;
            spks: (B, M) projected speaker embedding.
        loss_mask: (B, 1, T) or (B, T), 1 on valid frames (right padding 0).
        config: sigma_min, time schedule and classifier-free-guidance dropout.
        attn_mask: (T, T) bool attention mask of the estimator (True = may attend), or None (full).
        generator: draws t, the noise and the guidance dropout (reproducible losses).
        t, noise: (B,) times and (B, M, T) noise to use instead of drawing them (tests, evaluation).
        input_mask: (B, 1, T) or (B, T), 1 on the frames whose mu and cond the network sees (default:
            ``loss_mask``); give the valid frames when the loss leaves some out, e.g. a prompt-mel prefix.
    """
    cfg = config or FlowLossConfig()
    if x1.dim() != 3 or mu.shape != x1.shape or cond.shape != x1.shape:
        raise FlowLossError(f"x1, mu and cond must share one (B, M, T) shape, got {tuple(x1.shape)}, "
                            f"{tuple(mu.shape)}, {tuple(cond.shape)}")
    b, m, frames = x1.shape
    if spks.shape != (b, m):
        raise FlowLossError(f"spks must be (B, M) = {(b, m)}, got {tuple(spks.shape)}")
    mask = loss_mask.reshape(b, 1, -1).to(x1.dtype)  # (B, 1, T)
    if mask.shape[-1] != frames:
        raise FlowLossError(f"loss_mask must cover the {frames} frames, got {tuple(loss_mask.shape)}")
    valid = mask.sum()
    if float(valid) <= 0:
        raise FlowLossError("loss_mask selects no frame")
    if t is None:
        t = sample_times(b, cfg.t_scheduler, generator, x1.device)
    if noise is None:
        noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = t.to(x1.dtype)
    if t.shape != (b,) or noise.shape != x1.shape:
        raise FlowLossError(f"t must be (B,) and noise (B, M, T), got {tuple(t.shape)}, {tuple(noise.shape)}")
    tt = t.view(b, 1, 1)
    y = (1 - (1 - cfg.sigma_min) * tt) * noise + tt * x1  # a point on the path at time t
    target = x1 - (1 - cfg.sigma_min) * noise  # (B, M, T) the path's velocity
    if cfg.cfg_rate > 0:
        keep = (torch.rand(b, generator=generator, device=x1.device) >= cfg.cfg_rate).to(x1.dtype)  # (B,)
        mu, spks, cond = mu * keep.view(b, 1, 1), spks * keep.view(b, 1), cond * keep.view(b, 1, 1)
    seen = mask if input_mask is None else input_mask.reshape(b, 1, -1).to(x1.dtype)
    if seen.shape[-1] != frames:
        raise FlowLossError(f"input_mask must cover the {frames} frames, got {tuple(input_mask.shape)}")
    pred = estimator(y, mu * seen, t, spks, cond * seen, attn_mask)  # (B, M, T)
    return ((pred - target) * mask).square().sum() / (valid * m)


def prior_loss(mu: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Matcha-TTS style prior loss: the encoder's projected ``mu`` regressed on the target mel itself.

    CosyVoice2 trains ``mu`` only through the estimator, which a small flow trained briefly learns to ignore
    (it renders fluent speech of the wrong words). Pulling ``mu`` onto the mel makes the condition carry the
    content directly; the estimator then only refines it.

    Args:
        mu, x1: (B, M, T) encoder output (before guidance dropout) and target mel.
        mask: (B, 1, T) or (B, T), 1 on the frames to score.
        kind: ``"l2"`` (mean squared error, Matcha's prior) or ``"l1"``.

    Returns:
        The mean error per scored frame and mel bin (a scalar with gradients).
    """
    if mu.dim() != 3 or mu.shape != x1.shape:
        raise FlowLossError(f"mu and x1 must share one (B, M, T) shape, got {tuple(mu.shape)}, {tuple(x1.shape)}")
    if kind not in ("l1", "l2"):
        raise FlowLossError(f"prior loss kind must be 'l1' or 'l2', got {kind!r}")
    b, m, frames = x1.shape
    mask = mask.reshape(b, 1, -1).to(x1.dtype)
    if mask.shape[-1] != frames:
        raise FlowLossError(f"mask must cover the {frames} frames, got {tuple(mask.shape)}")
    valid = mask.sum()
    if float(valid) <= 0:
        raise FlowLossError("mask selects no frame")
    diff = (mu - x1) * mask
    err = diff.square() if kind == "l2" else diff.abs()
    return err.sum() / (valid * m)
