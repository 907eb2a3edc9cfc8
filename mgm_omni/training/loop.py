"""The step loop's pieces: ``TrainState``, a resumable batch stream and ``train_step``.

A recipe drives them explicitly::

    stream = batch_stream(loader, sampler, state)
    while state.step < cfg.max_steps:
        micro = [next(stream) for _ in range(cfg.accum_steps)]
        metrics = train_step(model, micro, loss_fn, optimizer, scheduler, state,
                             precision=cfg.precision, clip_norm=cfg.clip_norm, device=info.device)
        if state.step % cfg.log_every == 0: logger.log(state.step, metrics)
        if state.step % cfg.ckpt_every == 0: save_checkpoint(...)

``loss_fn(model, batch)`` returns ``(loss_sum, count)``: the loss summed over the ``count`` units it
covers (tokens, frames, items). Gradients are divided by the count summed over every micro-batch and
rank, so 2 micro-batches equal one batch of both, and ``W`` ranks equal one process with ``W`` micro-batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mgm_omni.training.distributed import all_reduce_sum, grad_sync, world_size
from mgm_omni.training.precision import autocast

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, "int | torch.Tensor"]]


@dataclass
class TrainState:
    """Counters saved with each checkpoint.

    Attributes:
        step: optimiser steps taken.
        epoch: current data epoch.
        batch_index: micro-batches of ``epoch`` this rank has consumed (the sampler's resume position).
        skipped_steps: steps whose gradient norm was not finite (no update was made).
    """

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    skipped_steps: int = 0


def batch_stream(loader: torch.utils.data.DataLoader, sampler, state: TrainState) -> Iterator[Any]:
    """Endless batches from ``state.epoch`` / ``state.batch_index`` on, advancing ``state`` as they are taken.

    ``sampler`` is the loader's batch sampler (``set_epoch(epoch, start)``); the position is counted
    here, not in the sampler, because the loader's workers read ahead of what the loop has used.
    """
    while True:
        sampler.set_epoch(state.epoch, start=state.batch_index)
        for batch in loader:
            state.batch_index += 1
            yield batch
        state.epoch += 1
        state.batch_index = 0


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in a (nested) dict / list / tuple to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def train_step(
    model: nn.Module,
    micro_batches: Sequence[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    state: TrainState,
    *,
    precision: str = "fp32",
    clip_norm: float | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """One optimiser step over ``micro_batches`` (gradient accumulation), then the scheduler step.

    Gradients sync across ranks only on the last micro-batch. The global gradient norm is clipped to
    ``clip_norm`` (if given); a non-finite norm skips the update but still advances step and schedule.

    Returns:
        ``loss`` (the global mean: summed loss / summed count over micro-batches and ranks), ``count``
        (that global count), ``grad_norm`` (before clipping) and ``lr`` (of the first group, as used).
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # [loss_sum, count] on this rank
    for i, batch in enumerate(micro_batches):
        with grad_sync(model, enabled=i == len(micro_batches) - 1):
            with autocast(precision, device):
                loss_sum, count = loss_fn(model, batch)
            loss_sum.float().backward()
        totals[0] += loss_sum.detach().double()
        totals[1] += count
    all_reduce_sum(totals)
    loss_total, count_total = totals.tolist()
    if count_total <= 0:
        raise ValueError("the micro-batches cover a count of 0 (nothing to average over)")
    # DDP and FSDP average gradients over ranks; undo that and divide by the global count instead.
    scale = world_size() / count_total
    for p in params:
        if p.grad is not None:
            p.grad.mul_(scale)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm is not None else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
        grad_norm = grad_norm.full_tensor()
    grad_norm = float(grad_norm)
    lr = optimizer.param_groups[0]["lr"]
    if math.isfinite(grad_norm):
        optimizer.step()
    else:
        state.skipped_steps += 1
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    state.step += 1
    return {"loss": loss_total / count_total, "count": count_total, "grad_norm": grad_norm, "lr": lr}
