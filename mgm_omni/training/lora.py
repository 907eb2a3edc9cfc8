"""Low-rank adapters (LoRA) on chosen linear layers, and merging them back for export.

``apply_lora`` swaps each matching ``nn.Linear`` for a :class:`LoRALinear` that keeps the same ``weight`` /
``bias`` parameters (frozen) and adds ``lora_A`` (r, in) and ``lora_B`` (out, r):
``y = x W^T + b + (alpha / r) x A^T B^T``. B starts at zero, so the model is unchanged until it trains.
``merge_lora`` folds ``(alpha / r) B A`` into ``W`` and puts plain ``nn.Linear`` modules back, so the exported
state dict has the upstream names only. The adapters may live in another dtype than the frozen base weight
(float32 factors on a bf16 LLM: the update is trained in full precision; the input is cast to them and the
update back to the input's dtype).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = alpha / rank
        w = base.weight
        dtype = dtype or w.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, dtype=dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=dtype, device=w.device))
        bound = 1 / math.sqrt(self.in_features)  # kaiming-uniform(a=sqrt(5)) of the A matrix, as in peft
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x.to(self.lora_A.dtype), self.lora_A), self.lora_B) * self.scale
        return F.linear(x, self.weight, self.bias) + update.to(x.dtype)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + scale * B A``."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        dtype=self.weight.dtype, device=self.weight.device)
        with torch.no_grad():
            out.weight.copy_(merged_weight(self.weight, self.lora_A, self.lora_B, self.scale))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def merged_weight(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """``W + scale * B A`` computed in float32, returned in ``weight``'s dtype."""
    return (weight.float() + scale * (lora_b.float() @ lora_a.float())).to(weight.dtype)


def apply_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float, under: str = "",
               seed: int = 0, dtype: torch.dtype | None = None) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends with one of ``targets`` (e.g. ``q_proj``) and starts with
    ``under``; returns the wrapped names. Their base weights are frozen; only ``lora_A`` / ``lora_B`` train."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear)
             and n.startswith(under) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise ValueError(f"no linear layer named {list(targets)} under {under!r}")
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, LoRALinear(getattr(holder, child), rank, alpha, gen, dtype))
    return names


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear`` (in place); returns how many."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, getattr(holder, child).merged())
    return len(names)


def merge_lora_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A state dict (e.g. read from a training checkpoint) with every ``X.lora_A`` / ``X.lora_B`` pair folded
    into ``X.weight`` (``+= scale * B A``) and removed."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in [k for k in state if k.endswith(".lora_A")]:
        base = key[: -len(".lora_A")]
        a, b = state[key], state[base + ".lora_B"]
        out[base + ".weight"] = (state[base + ".weight"].float() + scale * (b.float() @ a.float())).to(
            state[base + ".weight"].dtype)
    return out
