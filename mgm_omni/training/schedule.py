"""Learning-rate multipliers: linear warm-up, then cosine decay or constant.

Step ``s`` is the number of optimiser steps already taken, so the first update uses ``lr / warmup`` and
update ``warmup`` (0-based) is the first at full ``lr``. The multipliers are small callable dataclasses so
``LambdaLR.state_dict`` stores them and a resumed run continues on the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mgm_omni.config import ConfigError


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@dataclass
class WarmupCosine:
    """``(s + 1) / warmup`` during warm-up, then a half cosine from 1 to ``min_ratio`` at ``total_steps``."""

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupConstant:
    """``(s + 1) / warmup`` during warm-up, then 1."""

    warmup_steps: int

    def __call__(self, step: int) -> float:
        return _warmup(step, self.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over every parameter group; call ``.step()`` once after each optimiser step."""
    if schedule == "cosine":
        fn = WarmupCosine(warmup_steps, total_steps, min_ratio)
    elif schedule == "constant":
        fn = WarmupConstant(warmup_steps)
    else:
        raise ConfigError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
