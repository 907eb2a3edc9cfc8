"""The optional speech-text alignment loss of MLLM stage 1 (Lyra's ``asr_align``, spec §5).

For one sample with speech tokens X (N, H) (the projector's output) and transcript embeddings Y (M, H) (the
LLM's ``embed_tokens`` of the transcript ids), optionally L2-normalised:

* ``dtw``: the contrastive cost D[i, j] = -log softmax_j(x_i . y_j / tau) and the soft-DTW value of D
  (smoothing gamma, no band) divided by N: every speech token is pulled toward the transcript tokens a
  monotonic alignment assigns to it;
* ``truncated``: InfoNCE between the last n = min(N, M) speech tokens and the n transcript tokens.

Soft-DTW: R[i, j] = D[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1]), softmin_gamma(a) =
-gamma log sum exp(-a / gamma), R[0, 0] = 0 and R = inf elsewhere on the border; the value is R[N, M]. Each
anti-diagonal is computed at once (N + M - 1 vector steps), differentiable by autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALIGN_TYPES = ("dtw", "truncated")


@dataclass(frozen=True)
class AlignConfig:
    """``loss += weight * L_align`` (Lyra defaults: weight 0.5, temperature 1.0, dtw, normalised, gamma 0.1)."""

    weight: float = 0.5
    align_type: str = "dtw"
    temperature: float = 1.0
    normalize: bool = True
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.align_type not in ALIGN_TYPES:
            raise ValueError(f"align_type must be one of {ALIGN_TYPES}, got {self.align_type!r}")
        if self.temperature <= 0 or self.gamma <= 0 or self.weight < 0:
            raise ValueError("temperature and gamma must be > 0, weight >= 0")


def soft_dtw(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """Soft-DTW value of an (N, M) cost matrix (a scalar; differentiable)."""
    n, m = cost.shape
    inf = float("inf")
    # r[i, j] (i in 0..n, j in 0..m) held one anti-diagonal d = i + j at a time, indexed by the row i
    before = cost.new_full((n + 1,), inf)
    before[0] = 0.0  # d = 0: r[0, 0]
    last = cost.new_full((n + 1,), inf)  # d = 1: r[0, 1] = r[1, 0] = inf
    for d in range(2, n + m + 1):
        i = torch.arange(max(1, d - m), min(n, d - 1) + 1, device=cost.device)
        # predecessors (i-1, j-1) on d-2, (i-1, j) and (i, j-1) on d-1; each cell has a finite one
        prev = torch.stack([before[i - 1], last[i - 1], last[i]])  # (3, cells)
        value = cost[i - 1, d - i - 1] - gamma * torch.logsumexp(-prev / gamma, dim=0)
        before, last = last, cost.new_full((n + 1,), inf).index_put((i,), value)
    return last[n]


def alignment_loss(speech: torch.Tensor, text: torch.Tensor, cfg: AlignConfig) -> torch.Tensor:
    """L_align of one sample: speech (N, H), text (M, H) -> scalar (see the module docstring)."""
    if speech.dim() != 2 or text.dim() != 2 or speech.shape[1] != text.shape[1]:
        raise ValueError(f"alignment needs (N, H) speech and (M, H) text, got {tuple(speech.shape)}, "
                         f"{tuple(text.shape)}")
    x, y = speech.float(), text.float()
    if cfg.normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / cfg.temperature  # (N, M)
    if cfg.align_type == "truncated":
        n = min(len(x), len(y))
        return F.cross_entropy(x[-n:] @ y[:n].T / cfg.temperature, torch.arange(n, device=x.device))
    return soft_dtw(-logits.log_softmax(dim=1), cfg.gamma) / len(x)
