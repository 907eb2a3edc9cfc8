"""The step loop every gradient recipe runs: wrap, optimiser, schedule, resume, batches, log, checkpoint.

A recipe builds its model (seeded), its dataset and its loss, then calls :func:`fit`, which composes the
shared pieces (``distributed``, ``optim``, ``schedule``, ``sampler``, ``loader``, ``loop``, ``checkpointing``,
``metrics``). ``stop_after`` ends the run early after that many steps (a checkpoint is written there), which is
how an interrupted run is simulated; ``--resume`` continues from the newest checkpoint in ``out_dir``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mgm_omni.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from mgm_omni.training.config import TrainConfig
from mgm_omni.training.distributed import DistInfo, unwrap, wrap_model
from mgm_omni.training.loader import build_loader
from mgm_omni.training.loop import LossFn, TrainState, batch_stream, to_device, train_step
from mgm_omni.training.metrics import MetricsLogger, progress_bar
from mgm_omni.training.optim import build_optimizer
from mgm_omni.training.sampler import BucketedBatchSampler
from mgm_omni.training.schedule import build_scheduler


@dataclass
class FitResult:
    """What a run did: per-step metrics (this rank's view; ``loss`` is global), the final state and model."""

    history: list[dict[str, float]]
    state: TrainState
    model: nn.Module  # unwrapped
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """``step N: loss X`` of the last step (the line a recipe prints when it ends)."""
        last = self.history[-1] if self.history else {}
        return f"step {self.state.step}: loss {last.get('loss', float('nan')):.4f}"


def fit(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    lengths: Sequence[int],
    collate: Callable,
    loss_fn: LossFn,
    cfg: TrainConfig,
    info: DistInfo,
    *,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    stop_after: int | None = None,
    shard_classes: tuple[type[nn.Module], ...] = (),
    batch_stats: Callable[[Any], dict[str, float]] | None = None,
    step_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``model`` until ``cfg.max_steps`` (or ``stop_after``) optimiser steps.

    Args:
        lengths: per-item length the batch budget counts (``cfg.max_tokens`` per micro-batch).
        config: the recipe's whole config, saved beside each checkpoint.
        batch_stats: batch -> counts to add up per step (e.g. ``{"items": B, "audio_s": seconds}``).
        step_metrics: unwrapped model -> extra metrics to log after each step (e.g. loss parts).

    Returns:
        :class:`FitResult`; each history row holds ``step``, ``loss``, ``grad_norm``, ``lr``, ``seconds``
        (wall time of the step) and the summed ``batch_stats``.
    """
    model = wrap_model(model, cfg.strategy, info, shard_classes)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    state, resumed_from = TrainState(), None
    if resume:
        ckpt = latest_checkpoint(cfg.out_dir)
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer, scheduler)
            resumed_from = state.step
    sampler = BucketedBatchSampler(lengths, cfg.max_tokens, cfg.num_buckets, cfg.max_batch_size,
                                   seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    if not sampler.rank_batches(0):
        raise ValueError(f"{len(lengths)} items make no batch for each of {info.world_size} rank(s)")
    loader = build_loader(dataset, sampler, collate, cfg.loader, seed=cfg.seed)
    logger = MetricsLogger(cfg.out_dir, enabled=info.is_main, resume_step=resumed_from)
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    bar = progress_bar(end, state.step, enabled=info.is_main)
    stream = batch_stream(loader, sampler, state)
    history: list[dict[str, float]] = []
    try:
        while state.step < end:
            t0 = time.perf_counter()
            micro = [to_device(next(stream), info.device) for _ in range(cfg.accum_steps)]
            metrics = train_step(model, micro, loss_fn, optimizer, scheduler, state, precision=cfg.precision,
                                 clip_norm=cfg.clip_norm, device=info.device)
            metrics["seconds"] = time.perf_counter() - t0
            if step_metrics is not None:
                metrics.update(step_metrics(unwrap(model)))
            if batch_stats is not None:
                for batch in micro:
                    for k, v in batch_stats(batch).items():
                        metrics[k] = metrics.get(k, 0.0) + float(v)
            history.append({"step": state.step, **metrics})
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if state.step % cfg.log_every == 0 or state.step == end:
                logger.log(state.step, metrics)
            if state.step % cfg.ckpt_every == 0 or state.step == end:
                save_checkpoint(cfg.out_dir, state, model, optimizer, scheduler, config, cfg.keep_last)
    finally:
        bar.close()
        logger.plot()
        logger.close()
    return FitResult(history, state, unwrap(model), resumed_from)
