"""oneDNN-prepacked weights for decoding on CPU.

A decode step multiplies one row by every weight matrix (a GEMV). On CPU, ``F.linear`` takes a generic
path for that shape which, for bfloat16 weights, reads memory at a small fraction of the machine's
bandwidth; oneDNN's prepacked path (``torch.ops.mkldnn._linear_pointwise`` on a weight reordered once
with ``_reorder_linear_weight``, what Inductor uses for frozen CPU linears) reads the same bytes several
times faster. ``pack_linears`` swaps a model's ``nn.Linear`` layers for :class:`PackedLinear` in place.

After packing the model is for inference: the packed copies do not follow later changes to the
weights (pack again), and they cost one extra copy of the linear weights in memory.
"""

from __future__ import annotations

import functools
import torch
import torch.nn.functional as F
from torch import nn


def packing_available(weight: torch.Tensor) -> bool:
    """Whether ``weight`` can use the packed path: a float32/bfloat16 CPU tensor, oneDNN present, and this
    CPU able to run oneDNN's kernel for that dtype (bf16 packing needs AVX-512 BF16/BW or AVX-NE-CONVERT;
    without them ``_reorder_linear_weight`` raises, so the answer comes from packing a small probe once)."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16):
        return False
    return _packing_works(weight.dtype)


@functools.cache
def _packing_works(dtype: torch.dtype) -> bool:
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        probe = torch.ones(8, 16, dtype=dtype)
        out = packed_linear(torch.ones(1, 16, dtype=dtype), pack_weight(probe))
    except RuntimeError:
        return False
    return out.shape == (1, 8) and bool((out.float() == 16.0).all())


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) weight -> an opaque oneDNN tensor laid out for one-row inputs (any row count works)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` with a packed weight; ``x`` is (..., K)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """An ``nn.Linear`` computing with a prepacked copy of its weight (the original stays as ``weight``,
    so ``state_dict`` names do not change)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("packed", pack_weight(linear.weight), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:  # the packed kernel needs matching dtypes; keep F.linear semantics
            return F.linear(x, self.weight, self.bias)
        return packed_linear(x, self.packed, self.bias)


def pack_linears(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    """Replace every ``nn.Linear`` under ``module`` (except names starting with ``skip``) by a
    :class:`PackedLinear`, in place. Returns how many were packed (0 where packing is unavailable)."""
    count = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if type(sub) is nn.Linear and not full.startswith(skip) and packing_available(sub.weight):
                setattr(child, attr, PackedLinear(sub))
                count += 1
    return count


def quantize_int8(module: nn.Module) -> int:
    """Int8 weights (per output channel, dynamic activation scaling) for every ``nn.Linear`` under ``module``.

    An opt-in speed mode for CPU decoding of a float32 model: a one-row step reads a quarter of the
    float32 bytes and runs through fbgemm's int8 GEMV, measured about 2x faster than oneDNN-packed
    bfloat16 for the 0.6B SpeechLM step on this CPU (51 vs 100 ms). Outputs move slightly (see the
    tests for the measured logit agreement). Returns how many layers were quantised.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    before = sum(type(m) is nn.Linear for m in module.modules())
    quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return before - sum(type(m) is nn.Linear for m in module.modules())


class LinearSwap:
    """Packed copies of a module's ``nn.Linear`` layers that can be put in and taken out again, so the
    packed and the plain step of one model can be timed against each other (``step_choice``)."""

    def __init__(self, module: nn.Module, skip: tuple[str, ...] = ()) -> None:
        self.slots: list[tuple[nn.Module, str, nn.Linear, PackedLinear]] = []
        for name, child in list(module.named_modules()):
            for attr, sub in list(child.named_children()):
                full = f"{name}.{attr}" if name else attr
                if type(sub) is nn.Linear and not full.startswith(skip) and packing_available(sub.weight):
                    self.slots.append((child, attr, sub, PackedLinear(sub)))

    def __len__(self) -> int:
        return len(self.slots)

    def packed(self) -> None:
        for parent, attr, _, packed in self.slots:
            setattr(parent, attr, packed)

    def plain(self) -> None:
        for parent, attr, plain, _ in self.slots:
            setattr(parent, attr, plain)
