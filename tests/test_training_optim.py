"""Optimiser, schedules, precision and the step: values at known steps, grouping, clipping, accumulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.config import ConfigError
from mgm_omni.training.loop import TrainState, train_step
from mgm_omni.training.optim import build_optimizer, param_groups
from mgm_omni.training.precision import autocast
from mgm_omni.training.schedule import WarmupConstant, WarmupCosine, build_scheduler


def test_warmup_cosine_values():
    f = WarmupCosine(warmup_steps=4, total_steps=12, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way: 0.55
    assert f(12) == pytest.approx(0.1)
    assert f(50) == pytest.approx(0.1)  # past the end: stays at the floor
    assert WarmupCosine(0, 10)(0) == 1.0 and WarmupCosine(0, 10)(10) == pytest.approx(0.0)


def test_warmup_constant_values():
    f = WarmupConstant(warmup_steps=2)
    assert [f(s) for s in (0, 1, 2, 1000)] == [0.5, 1.0, 1.0, 1.0]


def test_scheduler_drives_the_lr_used_by_each_step():
    model = nn.Linear(3, 1)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.0)
    sched = build_scheduler(opt, "cosine", warmup_steps=2, total_steps=4, min_ratio=0.0)
    state = TrainState()
    batch = (torch.randn(4, 3), torch.randn(4, 1))
    used = [train_step(model, [batch], _mse_sum, opt, sched, state)["lr"] for _ in range(5)]
    assert used == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-12)
    with pytest.raises(ConfigError):
        build_scheduler(opt, "linear", 1, 2)


class MyRMSNorm(nn.Module):  # a custom norm class: recognised by its name
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.mix = nn.Parameter(torch.ones(d, d))  # 2-D, but inside a norm: still no decay


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.norm = MyRMSNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one parameter, listed once


def test_param_groups_no_decay_on_norms_biases_embeddings():
    decay, keep = param_groups(Grouped(), weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert decay["names"] == ["proj.weight"]
    assert sorted(keep["names"]) == [
        "embed.weight",
        "ln.bias",
        "ln.weight",
        "norm.mix",
        "norm.weight",
        "proj.bias",
    ]
    opt = build_optimizer(Grouped(), lr=1e-3, weight_decay=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 7  # frozen and tied duplicates left out


def _mse_sum(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    x, y = batch
    return F.mse_loss(model(x), y, reduction="sum"), y.numel()


def test_clipping_caps_the_update_norm():
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -grad: its norm is the clipped norm
    batch = (torch.randn(16, 8) * 10, torch.randn(16, 4) * 10)
    out = train_step(model, [batch], _mse_sum, opt, None, TrainState(), clip_norm=0.1)
    assert out["grad_norm"] > 1.0  # the norm before clipping is reported
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert delta.norm().item() == pytest.approx(0.1, rel=1e-5)


class TokenMLP(nn.Module):
    def __init__(self, d_in: int = 6, d: int = 16, classes: int = 5):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.inp(x))))


def _ce_sum(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    x, y = batch
    logits = model(x)  # (B, T, C)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum"), y.numel()


def _step_params(micro_batches, precision: str = "fp32") -> tuple[list[torch.Tensor], dict]:
    torch.manual_seed(0)
    model = TokenMLP()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = build_scheduler(opt, "constant", 0, 10)
    out = train_step(
        model, micro_batches, _ce_sum, opt, sched, TrainState(), precision=precision, clip_norm=1.0
    )
    return [p.detach().clone() for p in model.parameters()], out


def test_accumulating_two_micro_batches_equals_one_double_batch():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, 6, generator=g), torch.randint(0, 5, (6, 4), generator=g)
    split, split_out = _step_params([(x[:2], y[:2]), (x[2:], y[2:])])  # unequal halves: 2 + 4 items
    whole, whole_out = _step_params([(x, y)])
    assert split_out["loss"] == pytest.approx(whole_out["loss"], rel=1e-6)
    assert split_out["grad_norm"] == pytest.approx(whole_out["grad_norm"], rel=1e-5)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_bf16_autocast_keeps_fp32_master_weights():
    model = TokenMLP()
    with autocast("bf16", "cpu"):
        assert model(torch.randn(2, 3, 6)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert model(torch.randn(2, 3, 6)).dtype == torch.float32
    with pytest.raises(ConfigError):
        autocast("fp16", "cpu")
    g = torch.Generator().manual_seed(2)
    batch = (torch.randn(4, 5, 6, generator=g), torch.randint(0, 5, (4, 5), generator=g))
    bf16, bf16_out = _step_params([batch], precision="bf16")
    fp32, fp32_out = _step_params([batch], precision="fp32")
    assert all(p.dtype == torch.float32 for p in bf16)
    assert bf16_out["loss"] == pytest.approx(fp32_out["loss"], rel=2e-2)
    assert any(not torch.equal(a, b) for a, b in zip(bf16, fp32))  # autocast did change the compute


def test_non_finite_gradient_skips_the_update():
    model = nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, lr=0.1, weight_decay=0.0)
    state = TrainState()

    def nan_loss(m, batch):
        loss, n = _mse_sum(m, batch)
        return loss * float("nan"), n

    out = train_step(
        model, [(torch.randn(2, 3), torch.randn(2, 1))], nan_loss, opt, None, state, clip_norm=1.0
    )
    assert math.isnan(out["grad_norm"]) and state.step == 1 and state.skipped_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
