"""Mixed precision: bf16 autocast over fp32 master weights, or plain fp32.

Parameters, gradients and optimiser state stay fp32 in both modes; autocast only runs matmuls and
convolutions in bf16. bf16 needs no loss scaling (same exponent range as fp32).
"""

from __future__ import annotations

import contextlib

import torch

from mgm_omni.config import ConfigError


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """A context for the forward pass (run ``backward`` outside it).

    Args:
        precision: ``"bf16"`` (autocast to bfloat16) or ``"fp32"`` (no autocast).
        device: the device the forward runs on; its type picks the CPU or CUDA autocast.
    """
    device_type = torch.device(device).type
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision 'bf16' asked for, but this GPU does not support bfloat16")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
