"""AdamW with two parameter groups: decay for weight matrices, none for norms, biases and embeddings."""

from __future__ import annotations

import torch
from torch import nn

# Modules whose weights are gains or lookup tables, not projections: decaying them only shrinks them.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _is_no_decay_module(module: nn.Module) -> bool:
    # Custom norms (e.g. Qwen's RMSNorm class) are recognised by name.
    return isinstance(module, NO_DECAY_MODULES) or "norm" in type(module).__name__.lower()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a ``weight_decay=0`` group.

    No decay for: every bias, every 1-D parameter (gains, scales), and all parameters of embedding and
    normalisation modules (``nn.Embedding``, ``*Norm*`` classes). Frozen parameters are left out; a
    parameter shared by two modules is listed once.

    Returns:
        ``[{"params": decay, "weight_decay": weight_decay, "names": [...]}, {"params": no_decay, ...}]``;
        empty groups are dropped.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if _is_no_decay_module(module):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, decay_names, keep, keep_names = [], [], [], []
    for name, p in model.named_parameters():  # named_parameters() already skips shared duplicates
        if not p.requires_grad:
            continue
        if id(p) in no_decay_ids or p.ndim < 2 or name.endswith("bias"):
            keep.append(p)
            keep_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": keep, "weight_decay": 0.0, "names": keep_names},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` on CUDA, the default foreach kernel elsewhere."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if on_cuda else None)
