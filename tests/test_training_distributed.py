"""Two gloo processes on CPU (DDP, then FSDP2) train like one process that accumulates both ranks' batches.

One ``torch.multiprocessing.spawn`` runs both strategies (each process pays the torch import once); rank 0
writes what it saw, and the tests compare it with a single-process run of the same global batches.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mgm_omni.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from mgm_omni.training.config import LoaderConfig
from mgm_omni.training.distributed import (
    DistInfo,
    cleanup,
    init_distributed,
    is_fsdp,
    reduce_mean,
    unwrap,
    wrap_model,
)
from mgm_omni.training.loader import PadCollate, build_loader
from mgm_omni.training.loop import TrainState, batch_stream, train_step
from mgm_omni.training.optim import build_optimizer
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.sampler import BucketedBatchSampler
from mgm_omni.training.schedule import build_scheduler

WORLD, STEPS, D_IN, CLASSES = 2, 3, 6, 5


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.fc(self.norm(x)))


class Tagger(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.inp = nn.Linear(D_IN, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.out = nn.Linear(d, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch["x"])  # (B, T, C)
    mask = torch.arange(logits.shape[1])[None, :] < batch["x_lengths"][:, None]
    return F.cross_entropy(logits[mask], batch["y"][mask], reduction="sum"), mask.sum()


def dataset() -> list[dict[str, torch.Tensor]]:
    rng = np.random.default_rng(0)
    items = []
    for _ in range(40):
        t = int(rng.integers(2, 13))
        items.append(
            {
                "x": torch.tensor(rng.normal(size=(t, D_IN)), dtype=torch.float32),
                "y": torch.tensor(rng.integers(0, CLASSES, t)),
            }
        )
    return items


def train(
    strategy: str, info: DistInfo, accum: int, ckpt_dir=None
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Train STEPS steps; returns the global losses and the full final parameters."""
    seed_everything(0)  # identical initial weights on every rank (FSDP2 does not broadcast them)
    model = wrap_model(Tagger(), strategy, info, shard_classes=(Block,))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = build_scheduler(opt, "cosine", 1, STEPS, 0.1)
    data = dataset()
    sampler = BucketedBatchSampler(
        [len(d["x"]) for d in data],
        max_tokens=40,
        num_buckets=2,
        seed=0,
        rank=info.rank,
        world_size=info.world_size,
    )
    loader = build_loader(data, sampler, PadCollate(), LoaderConfig(num_workers=0))
    state = TrainState()
    stream = batch_stream(loader, sampler, state)
    losses = []
    for _ in range(STEPS):
        out = train_step(
            model, [next(stream) for _ in range(accum)], loss_fn, opt, sched, state, clip_norm=1.0
        )
        losses.append(out["loss"])
    if ckpt_dir is not None:  # collective save, then a fresh model of the same strategy loads it
        save_checkpoint(ckpt_dir, state, model, opt, sched)
        seed_everything(7)
        fresh = wrap_model(Tagger(), strategy, info, shard_classes=(Block,))
        fresh_opt = build_optimizer(fresh, lr=1e-2, weight_decay=0.1)
        load_checkpoint(
            latest_checkpoint(ckpt_dir), fresh, fresh_opt, build_scheduler(fresh_opt, "cosine", 1, STEPS)
        )
        assert all(torch.equal(_full(a), _full(b)) for a, b in zip(model.parameters(), fresh.parameters()))
    return losses, {n: _full(p).detach().clone() for n, p in unwrap(model).named_parameters()}


def _full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 parameters are DTensor shards


def _worker(rank: int, port: int, out_path: str, ckpt_root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    info = init_distributed(device="cpu")
    results = {"info": (info.rank, info.world_size, info.is_main)}
    results["mean"] = reduce_mean({"a": float(rank), "b": 2.0 * rank})
    for strategy in ("ddp", "fsdp"):
        try:
            results[strategy] = train(strategy, info, accum=1, ckpt_dir=os.path.join(ckpt_root, strategy))
            model = wrap_model(Tagger(), strategy, info)
            results[strategy + "_wrapped"] = type(model).__name__, is_fsdp(model)
        except Exception as exc:  # reported to the test, which says what failed
            results[strategy] = repr(exc)
    if rank == 0:
        torch.save(results, out_path)
    cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    out = root / "rank0.pt"
    mp.spawn(_worker, args=(_free_port(), str(out), str(root)), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one_process():
    torch.set_num_threads(1)
    return train("none", DistInfo(), accum=WORLD)


def _assert_same_run(got, want):
    assert not isinstance(got, str), got
    losses, params = got
    ref_losses, ref_params = want
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-6)
    assert params.keys() == ref_params.keys()
    for name in params:
        torch.testing.assert_close(params[name], ref_params[name], rtol=0, atol=1e-6, msg=name)


def test_helpers_across_ranks(two_ranks):
    assert two_ranks["info"] == (0, WORLD, True)
    assert two_ranks["mean"] == {"a": 0.5, "b": 1.0}


def test_ddp_matches_one_process_with_the_same_global_batch(two_ranks, one_process):
    assert two_ranks["ddp_wrapped"] == ("DistributedDataParallel", False)
    _assert_same_run(two_ranks["ddp"], one_process)


def test_fsdp2_on_gloo_cpu_matches_one_process(two_ranks, one_process):
    assert two_ranks["fsdp_wrapped"][1] is True
    _assert_same_run(two_ranks["fsdp"], one_process)


def test_single_process_needs_no_process_group():
    info = init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)
    assert reduce_mean({"loss": 2.5}) == {"loss": 2.5}
    model = nn.Linear(2, 2)
    assert wrap_model(model, "ddp", info) is model  # DDP over one process is the process
