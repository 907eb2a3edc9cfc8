"""The flow-matching loss apart from the solver: exact values with an oracle and a zero estimator, right
padding exact under a causal mask (batched = one by one), guidance dropout, a few optimiser steps on the
real velocity network, bad input."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.models.flow_config import FlowEstimatorConfig
from mgm_omni.models.flow_estimator import CausalConditionalDecoder
from mgm_omni.models.flow_loss import FlowLossConfig, FlowLossError, flow_matching_loss, prior_loss, sample_times

M = 80
NO_CFG = FlowLossConfig(cfg_rate=0.0)


def _batch(b=2, frames=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x1, mu, cond = (torch.randn(b, M, frames, generator=gen) for _ in range(3))
    spks = torch.randn(b, M, generator=gen)
    return x1, mu, spks, cond, gen


def _estimator(seed=0):
    torch.manual_seed(seed)
    cfg = FlowEstimatorConfig(channels=(16,), attention_head_dim=8, num_heads=2, n_blocks=1, num_mid_blocks=1)
    return CausalConditionalDecoder(cfg)


def test_oracle_velocity_gives_zero_and_zero_velocity_gives_the_target_energy():
    x1, mu, spks, cond, gen = _batch()
    noise = torch.randn(x1.shape, generator=gen)
    t = torch.tensor([0.3, 0.8])
    mask = torch.ones(2, 1, 20)
    mask[1, :, 15:] = 0
    sigma = NO_CFG.sigma_min

    def oracle(y, mu_, t_, spks_, cond_, attn):
        # the path through (noise, x1) has the same velocity everywhere; y must be on it at time t
        expected_y = (1 - (1 - sigma) * t_.view(-1, 1, 1)) * noise + t_.view(-1, 1, 1) * x1
        assert torch.allclose(y, expected_y)
        return x1 - (1 - sigma) * noise

    assert float(flow_matching_loss(oracle, x1, mu, mask, spks, cond, NO_CFG, t=t, noise=noise)) == pytest.approx(0.0, abs=1e-12)
    zero = flow_matching_loss(lambda y, *a: torch.zeros_like(y), x1, mu, mask, spks, cond, NO_CFG, t=t, noise=noise)
    target = (x1 - (1 - sigma) * noise) * mask
    assert float(zero) == pytest.approx(float(target.square().sum() / (35 * M)), rel=1e-6)


def test_right_padding_is_exact_under_a_causal_mask():
    """One batch of a 20-frame and a 12-frame item equals the two items alone (frame-weighted)."""
    est = _estimator()
    x1, mu, spks, cond, gen = _batch()
    noise = torch.randn(x1.shape, generator=gen)
    t = torch.tensor([0.25, 0.6])
    mask = torch.ones(2, 20)
    mask[1, 12:] = 0
    causal = torch.ones(20, 20, dtype=torch.bool).tril()
    with torch.no_grad():
        batched = flow_matching_loss(est, x1, mu, mask, spks, cond, NO_CFG, causal, t=t, noise=noise)
        a = flow_matching_loss(est, x1[:1], mu[:1], mask[:1], spks[:1], cond[:1], NO_CFG, causal, t=t[:1],
                               noise=noise[:1])
        n = 12
        b = flow_matching_loss(est, x1[1:, :, :n], mu[1:, :, :n], mask[1:, :n], spks[1:], cond[1:, :, :n], NO_CFG,
                               causal[:n, :n], t=t[1:], noise=noise[1:, :, :n])
    assert torch.allclose(batched, (a * 20 + b * 12) / 32, rtol=1e-5, atol=1e-7)
    # under full attention the padded frames do leak (which is why the mask matters)
    with torch.no_grad():
        leaky = flow_matching_loss(est, x1, mu, mask, spks, cond, NO_CFG, None, t=t, noise=noise)
    assert not torch.allclose(leaky, batched, rtol=1e-5)


def test_guidance_dropout_zeroes_the_conditions_of_dropped_items():
    x1, mu, spks, cond, gen = _batch(b=4)
    seen = {}

    def record(y, mu_, t_, spks_, cond_, attn):
        seen.update(mu=mu_, spks=spks_, cond=cond_)
        return torch.zeros_like(y)

    flow_matching_loss(record, x1, mu, torch.ones(4, 20), spks, cond, FlowLossConfig(cfg_rate=1.0), generator=gen)
    assert all(float(v.abs().max()) == 0.0 for v in seen.values())
    flow_matching_loss(record, x1, mu, torch.ones(4, 20), spks, cond, NO_CFG, generator=gen)
    assert torch.equal(seen["mu"], mu) and torch.equal(seen["spks"], spks) and torch.equal(seen["cond"], cond)


def test_a_few_steps_on_the_velocity_network_lower_the_loss():
    est = _estimator(1)
    x1, mu, spks, cond, gen = _batch(b=2, frames=16, seed=3)
    noise = torch.randn(x1.shape, generator=gen)
    t = torch.tensor([0.4, 0.7])
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = flow_matching_loss(est, x1, mu, torch.ones(2, 16), spks, cond, NO_CFG, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in zip(losses, losses[1:]))
    assert all(p.grad is not None for p in est.parameters() if p.requires_grad)


def test_times_follow_the_schedule():
    gen = torch.Generator().manual_seed(0)
    cos = sample_times(10000, "cosine", gen)
    lin = sample_times(10000, "linear", torch.Generator().manual_seed(0))
    assert torch.allclose(cos, 1 - torch.cos(lin * torch.pi / 2))
    assert 0 <= float(cos.min()) and float(cos.max()) < 1 and float(cos.mean()) < float(lin.mean())


def test_bad_input_is_refused_before_the_network_runs():
    x1, mu, spks, cond, _ = _batch()

    def never(*args):
        raise AssertionError("the estimator must not run")

    with pytest.raises(FlowLossError, match="share one"):
        flow_matching_loss(never, x1, mu[:, :, :5], torch.ones(2, 20), spks, cond)
    with pytest.raises(FlowLossError, match="spks"):
        flow_matching_loss(never, x1, mu, torch.ones(2, 20), spks[:, :3], cond)
    with pytest.raises(FlowLossError, match="no frame"):
        flow_matching_loss(never, x1, mu, torch.zeros(2, 20), spks, cond)
    with pytest.raises(FlowLossError, match="cover"):
        flow_matching_loss(never, x1, mu, torch.ones(2, 19), spks, cond)
    with pytest.raises(FlowLossError, match="t_scheduler"):
        FlowLossConfig(t_scheduler="sigmoid")


def test_prior_loss_scores_mu_against_the_mel_on_the_masked_frames():
    x1, mu, _, _, _ = _batch()
    mask = torch.ones(2, 20)
    mask[1, 15:] = 0  # 35 frames scored
    diff = (mu - x1)[:, :, :20]
    scored = torch.cat([diff[0].flatten(), diff[1, :, :15].flatten()])
    assert float(prior_loss(mu, x1, mask)) == pytest.approx(float(scored.square().mean()), rel=1e-6)
    assert float(prior_loss(mu, x1, mask, "l1")) == pytest.approx(float(scored.abs().mean()), rel=1e-6)
    assert float(prior_loss(x1, x1, mask)) == 0.0
    mu.requires_grad_(True)
    prior_loss(mu, x1, mask).backward()
    assert float(mu.grad[1, :, 15:].abs().max()) == 0.0 and float(mu.grad[1, :, :15].abs().min()) > 0
    with pytest.raises(FlowLossError, match="share one"):
        prior_loss(mu[:, :, :5], x1, mask)
    with pytest.raises(FlowLossError, match="kind"):
        prior_loss(mu, x1, mask, "huber")
    with pytest.raises(FlowLossError, match="no frame"):
        prior_loss(mu, x1, torch.zeros(2, 20))
