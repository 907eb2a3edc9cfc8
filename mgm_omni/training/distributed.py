"""``torch.distributed`` from torchrun's environment, DDP / FSDP2 wrapping, gradient-sync control, metrics.

Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialised and every helper works as
the single process it is. Only rank 0 logs and writes checkpoints (``DistInfo.is_main``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mgm_omni.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``).

    Args:
        device: ``"cuda"`` or ``"cpu"``; default CUDA when available. NCCL on CUDA, gloo on CPU. On CUDA
            the process binds to GPU ``LOCAL_RANK``.
        timeout_s: collective timeout.
    """
    device_type = device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if device_type == "cuda" else None,
        )
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def wrap_model(
    model: nn.Module,
    strategy: str,
    info: DistInfo,
    shard_classes: tuple[type[nn.Module], ...] = (),
) -> nn.Module:
    """Move ``model`` to ``info.device`` and wrap it for data parallelism.

    Args:
        strategy: ``"none"`` (single process), ``"ddp"`` (replicated weights, all-reduced gradients) or
            ``"fsdp"`` (FSDP2 ``fully_shard``: parameters, gradients and optimiser state sharded).
        shard_classes: with FSDP2, each submodule of these classes (e.g. the decoder layer class) becomes
            its own unit, so only one layer's full weights exist at a time; the root is always sharded.

    Build the optimiser after wrapping (FSDP2 replaces parameters with sharded DTensors). Parameters
    stay fp32; use :func:`mgm_omni.training.precision.autocast` for bf16 compute.
    """
    model = model.to(info.device)
    if strategy == "none" or (strategy == "ddp" and not info.is_distributed):
        return model
    if strategy == "ddp":
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for module in model.modules():
            if module is not model and isinstance(module, shard_classes):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ConfigError(f"strategy must be 'none', 'ddp' or 'fsdp', got {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards in place, so it is its own module)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce for this backward when ``enabled`` is false (accumulation micro-batches)."""
    if enabled or not dist.is_initialized():
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op in a single process); returns ``t``."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def reduce_mean(metrics: Mapping[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean of each metric over ranks (every rank gets the result; one collective call)."""
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    all_reduce_sum(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call at the end of a recipe)."""
    if dist.is_initialized():
        dist.destroy_process_group()
