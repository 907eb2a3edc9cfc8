"""Cached chunk-causal flow: equals the one-pass flow inside the window, hop-invariant, bounded."""

from __future__ import annotations

import math

import pytest
import torch
from test_flow import SMALL, _random_inputs

from mgm_omni.generation.wave.chunk_cache import ChunkCache, ChunkCacheError
from mgm_omni.generation.wave.flow_stream import FlowStream, FlowStreamError
from mgm_omni.models.conformer import RelPositionAttention, rel_position_rows
from mgm_omni.models.flow import CausalFlow

N_PROMPT, N_NEW = 30, 140  # prompt ends inside chunk 1; 170 tokens = 6.8 chunks


@pytest.fixture(scope="module")
def flow() -> CausalFlow:
    torch.manual_seed(0)
    return CausalFlow(SMALL).eval()


@pytest.fixture(scope="module")
def inputs():
    return _random_inputs(SMALL, N_PROMPT, N_NEW)


def _stream(flow, inp, hops, left_chunks):
    """Render with the given non-final hops, then everything left in a final call."""
    fs = FlowStream(flow, inp["prompt_token"], inp["prompt_feat"], inp["embedding"], left_chunks)
    toks = inp["token"][0].tolist()
    mels, pos, held = [], 0, []
    for hop in hops:
        mels.append(fs.render(toks[pos:pos + hop], toks[pos + hop:pos + hop + 3]))
        pos += hop
        held.append(fs.held_positions)
    mels.append(fs.render(toks[pos:], final=True))
    return torch.cat(mels, dim=2), held


@pytest.mark.parametrize("hops", [[20, 25, 50], [45], [20, 25, 25, 25, 25], []])
def test_unbounded_cache_equals_one_chunk_causal_pass(flow, inputs, hops):
    one = flow.inference(inputs["token"], inputs["prompt_token"], inputs["prompt_feat"], inputs["embedding"],
                         streaming=True, finalize=True)
    mel, _ = _stream(flow, inputs, hops, None)
    assert mel.shape == one.shape == (1, 80, 2 * N_NEW)
    assert (mel - one).abs().max().item() < 1e-4


@pytest.mark.parametrize("left", [0, 1, 2])
def test_window_is_the_same_whatever_the_hops(flow, inputs, left):
    a, held = _stream(flow, inputs, [20, 25, 25, 25, 25], left)
    for hops in ([20, 75, 25], [45, 50], []):
        b, _ = _stream(flow, inputs, hops, left)
        assert (a - b).abs().max().item() < 1e-4
    # held keys: the prompt (60 frames) plus `left` chunks of 50 frames once the window is full
    assert held[-1] == 2 * N_PROMPT + left * 50


def test_window_matches_unbounded_until_it_drops_keys(flow, inputs):
    full, _ = _stream(flow, inputs, [20, 25, 25, 25, 25], None)
    windowed, _ = _stream(flow, inputs, [20, 25, 25, 25, 25], 2)
    # chunk c sees every earlier chunk while c - 2 <= the prompt's last chunk (1): chunks 0..3 exactly,
    # i.e. new tokens 0..69 (the first 20 new tokens complete chunk 1)
    exact = 2 * (4 * 25 - N_PROMPT)
    assert (full[:, :, :exact] - windowed[:, :, :exact]).abs().max().item() < 1e-4
    assert (full[:, :, exact:] - windowed[:, :, exact:]).abs().max().item() > 1e-3  # the window does act


def test_state_stays_flat_over_a_long_stream(flow, inputs):
    fs = FlowStream(flow, inputs["prompt_token"], inputs["prompt_feat"], inputs["embedding"], 1)
    gen = torch.Generator().manual_seed(1)
    fs.render(torch.randint(0, 6561, (20,), generator=gen).tolist(), [1, 2, 3])
    sizes = []
    for _ in range(12):  # 12 more chunks
        fs.render(torch.randint(0, 6561, (25,), generator=gen).tolist(), [1, 2, 3])
        caches = [fs.token_cache, fs.frame_cache, *fs.step_caches]
        sizes.append(sum(k.numel() + v.numel() for c in caches for k, v in c.keys))
    assert len(set(sizes[2:])) == 1
    assert fs.token_cache.stored == N_PROMPT + 25 and fs.frame_cache.stored == 2 * N_PROMPT + 50


def test_attend_follows_the_documented_visibility(flow):
    """Three calls through a ChunkCache against one masked attention over all positions."""
    chunk, prompt, left, total = 4, 6, 1, 22
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, total, 8, generator=gen) for _ in range(3))
    pos = torch.arange(total)
    c_q, c_k = (pos // chunk)[:, None], (pos // chunk)[None, :]
    mask = (c_k <= c_q) & ((pos[None, :] < prompt) | (c_k >= c_q - left))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    cache = ChunkCache(chunk, prompt, left)
    outs = []
    for start, stop in ((0, 8), (8, 20), (20, 22)):
        cache.begin(start, stop - start)
        sl = slice(start, stop)
        outs.append(cache.attend(q[:, :, sl], k[:, :, sl], v[:, :, sl],
                                 lambda rows, segs, qp, kp, sl=sl: torch.nn.functional.scaled_dot_product_attention(
                                     q[:, :, sl][:, :, rows], torch.cat([s[0] for s in segs], 2),
                                     torch.cat([s[1] for s in segs], 2))))
        cache.finish()
    assert (torch.cat(outs, dim=2) - ref).abs().max().item() < 1e-5
    with pytest.raises(ChunkCacheError):
        cache.begin(30, 4)  # does not continue at 22


def test_relative_positions_put_the_prompt_right_before_the_window():
    """Past the window the conformer sees the prompt shifted next to it (bounded relative offsets)."""
    torch.manual_seed(0)
    att = RelPositionAttention(16, 2).eval()
    with torch.no_grad():
        att.pos_bias_u.normal_()
        att.pos_bias_v.normal_()
    chunk, prompt, left = 4, 3, 1
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 20, 16, generator=gen)
    cache = ChunkCache(chunk, prompt, left)
    outs = []
    with torch.no_grad():
        for start, stop in ((0, 8), (8, 20)):
            cache.begin(start, stop - start)
            outs.append(att(x[:, start:stop], None, None, cache))
            cache.finish()
        got = torch.cat(outs, dim=1)
        # reference: each query over its visible keys, with the prompt keys re-positioned
        h, d = 2, 8
        q = att.linear_q(x).view(1, 20, h, d)
        k = att.linear_k(x).view(1, 20, h, d)
        v = att.linear_v(x).view(1, 20, h, d)
        rows = []
        for i in range(20):
            c = i // chunk
            lo = max(0, (c - left) * chunk)
            keys = list(range(min(prompt, (c + 1) * chunk)))
            keys += [j for j in range(max(prompt, lo), min(20, (c + 1) * chunk))]
            shift = max(0, lo - prompt)
            virt = [j + shift if j < prompt else j for j in keys]
            scores = []
            for j, vj in zip(keys, virt):
                p = att.linear_pos(rel_position_rows(i - vj, i - vj, 16, x.device, x.dtype)).view(h, d)
                s = ((q[0, i] + att.pos_bias_u) * k[0, j]).sum(-1) + ((q[0, i] + att.pos_bias_v) * p).sum(-1)
                scores.append(s / math.sqrt(d))
            w = torch.stack(scores, -1).softmax(-1)  # (H, n_keys)
            rows.append(torch.einsum("hn,nhd->hd", w, v[0, keys]).reshape(-1))
        want = att.linear_out(torch.stack(rows)[None])
    assert (got - want).abs().max().item() < 1e-5


def test_noise_columns_wrap_past_the_buffer(flow):
    cfm = flow.decoder
    n = cfm.rand_noise.shape[2]
    assert torch.equal(cfm.noise_at(5, 10), cfm.rand_noise[:, :, 5:15])
    wrapped = cfm.noise_at(n - 2, 4)
    assert torch.equal(wrapped, torch.cat([cfm.rand_noise[:, :, n - 2:], cfm.rand_noise[:, :, :2]], dim=2))


def test_bad_calls_fail_before_any_work(flow, inputs):
    fs = FlowStream(flow, inputs["prompt_token"], inputs["prompt_feat"], inputs["embedding"], 4)
    with pytest.raises(FlowStreamError, match="grid"):
        fs.render([1] * 21, [1, 2, 3])  # 30 + 21 is off the 25-token grid
    with pytest.raises(FlowStreamError, match="look-ahead"):
        fs.render([1] * 20, [1])
    with pytest.raises(FlowStreamError, match="6561"):
        fs.render([1] * 19 + [6561], [1, 2, 3])
    assert fs.position == 0  # nothing was rendered
    fs.render([1] * 5, final=True)
    assert fs.held_positions == 0 and not fs.token_cache.tails  # a closed stream holds nothing
    with pytest.raises(FlowStreamError, match="closed"):
        fs.render([1] * 20, [1, 2, 3])
    with pytest.raises(FlowStreamError, match="prompt mel"):
        FlowStream(flow, inputs["prompt_token"], inputs["prompt_feat"][:, :-1], inputs["embedding"], 4)
