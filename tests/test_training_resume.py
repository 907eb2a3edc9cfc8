"""Exact resume: a run stopped half-way and resumed from its checkpoint ends bit-identical to an unbroken run.

The tiny model has dropout, the data is variable-length shards read through the bucketed sampler, and the
run crosses epoch boundaries with gradient accumulation, so the model, optimiser, schedule, data position
and every RNG all have to come back exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.checkpoint import CheckpointError, load_state_dict
from mgm_omni.training.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from mgm_omni.training.config import LoaderConfig, TrainConfig, to_dict
from mgm_omni.training.loader import PadCollate, build_loader
from mgm_omni.training.loop import TrainState, batch_stream, train_step
from mgm_omni.training.optim import build_optimizer
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.sampler import BucketedBatchSampler
from mgm_omni.training.schedule import build_scheduler
from mgm_omni.training.shards import ShardDataset, ShardWriter

D_IN, CLASSES = 6, 5


class Tagger(nn.Module):
    """Per-frame classifier with dropout (its masks come from the global torch RNG)."""

    def __init__(self, d: int = 16, p: float = 0.2):
        super().__init__()
        self.inp = nn.Linear(D_IN, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(d, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.relu(self.norm(self.inp(x)))))


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch["x"])  # (B, T, C)
    mask = torch.arange(logits.shape[1])[None, :] < batch["x_lengths"][:, None]  # (B, T)
    return F.cross_entropy(logits[mask], batch["y"][mask], reduction="sum"), mask.sum()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    with ShardWriter(path, items_per_shard=10) as w:
        for _ in range(24):
            t = int(rng.integers(2, 13))
            w.add({"x": rng.normal(size=(t, D_IN)).astype(np.float32), "y": rng.integers(0, CLASSES, t)})
    return path


def run(
    shards,
    out_dir,
    num_workers: int,
    stop_at: int | None = None,
    resume: bool = False,
    restore_rng: bool = True,
) -> nn.Module:
    """The recipe loop, as small as a recipe would write it."""
    cfg = TrainConfig(
        lr=3e-3,
        warmup_steps=2,
        max_steps=8,
        max_tokens=32,
        num_buckets=3,
        accum_steps=2,
        clip_norm=0.5,
        precision="fp32",
        seed=0,
        ckpt_every=4,
        keep_last=2,
        out_dir=str(out_dir),
        loader=LoaderConfig(num_workers=num_workers),
    )
    seed_everything(123 if resume else cfg.seed)  # a resumed run must not depend on its own seeding
    model = Tagger()
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    sched = build_scheduler(opt, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    ds = ShardDataset(shards)
    sampler = BucketedBatchSampler(ds.lengths, cfg.max_tokens, cfg.num_buckets, seed=cfg.seed)
    loader = build_loader(ds, sampler, PadCollate(), cfg.loader, seed=cfg.seed)
    state = TrainState()
    if resume:
        state = load_checkpoint(latest_checkpoint(out_dir), model, opt, sched, restore_rng=restore_rng)
    stream = batch_stream(loader, sampler, state)
    while state.step < (stop_at or cfg.max_steps):
        micro = [next(stream) for _ in range(cfg.accum_steps)]
        train_step(model, micro, loss_fn, opt, sched, state, precision=cfg.precision, clip_norm=cfg.clip_norm)
        if state.step % cfg.ckpt_every == 0:
            save_checkpoint(out_dir, state, model, opt, sched, config=to_dict(cfg), keep_last=cfg.keep_last)
    assert state.epoch >= 1 or stop_at  # the full run crosses an epoch boundary
    return model


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_bit_identical(shards, tmp_path, num_workers):
    full = run(shards, tmp_path / "full", num_workers)
    run(shards, tmp_path / "broken", num_workers, stop_at=4)
    state = json.loads((latest_checkpoint(tmp_path / "broken") / "train_state.json").read_text())[
        "train_state"
    ]
    assert state["step"] == 4 and state["batch_index"] > 0  # stopped mid-epoch
    resumed = run(shards, tmp_path / "broken", num_workers, resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # the test has teeth: without the RNG restore the dropout masks, and so the weights, differ
    run(shards, tmp_path / "no_rng", num_workers, stop_at=4)
    no_rng = run(shards, tmp_path / "no_rng", num_workers, resume=True, restore_rng=False)
    assert not torch.equal(no_rng.out.weight, full.out.weight)


def test_checkpoint_files_keep_last_and_atomicity(shards, tmp_path):
    run(shards, tmp_path, num_workers=0)  # checkpoints at steps 4 and 8, keep_last=2
    model = Tagger()
    opt = build_optimizer(model, 1e-3, 0.0)
    for step in (12, 16):
        save_checkpoint(tmp_path, TrainState(step=step), model, opt, keep_last=2)
    (tmp_path / "checkpoints" / ".tmp-step-00000020-1").mkdir()  # a crashed write
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000012", "step-00000016"]
    latest = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in latest.iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
        "rng.pt",
        "train_state.json",
    ]
    weights = load_state_dict(latest)  # plain safetensors, readable by the inference loader
    assert torch.equal(weights["out.weight"], model.out.weight)
    meta = json.loads((latest / "train_state.json").read_text())
    meta["world_size"] = 2
    (latest / "train_state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="world size"):
        load_checkpoint(latest, model, opt)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, model)
