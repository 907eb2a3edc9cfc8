"""Token2Wav on the cached flow: bounded state, offline = streaming flow, the re-render path kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from golden import golden_params
from test_token2wav import E2E, _inputs, _renderer

from mgm_omni.generation.wave.token2wav import StreamSchedule, Token2WavError


class _MelTap:
    """Records the mel of every vocoder call (the 8 carried-over frames dropped after the first)."""

    def __init__(self, vocoder):
        self.vocoder, self.cfg, self.mels = vocoder, vocoder.cfg, []

    def inference(self, mel, cache_source=None, **kw):
        self.mels.append(mel if not self.mels else mel[:, :, 8:])
        return self.vocoder.inference(mel, cache_source=cache_source, **kw)

    def stream_mel(self):
        return torch.cat(self.mels, dim=2)


@pytest.mark.parametrize("gdir", golden_params(E2E))
def test_stream_state_stays_bounded(gdir):
    t2w = _renderer(gdir)
    prompt, tokens = _inputs(gdir)
    state = t2w.start(prompt, StreamSchedule(left_chunks=2, max_hop=50), seed=0)
    held, pending, samples = [], [], 0
    for i in range(0, len(tokens), 4):
        samples += sum(c.shape[0] for c in t2w.push(state, tokens[i:i + 4]))
        pending.append(len(state.tokens))
        held.append(state.flow.held_positions)
    samples += t2w.flush(state).shape[0]
    assert samples == len(tokens) * 960
    assert max(pending) < 50 + 3 + 4  # only tokens not rendered yet are kept
    assert max(held) == 2 * prompt.n_tokens + 2 * 50  # prompt frames + 2 chunks of 50 frames
    assert held[-1] == max(held)


@pytest.mark.parametrize("gdir", golden_params(E2E))
def test_offline_render_and_streaming_share_one_flow(gdir):
    """A long offline render (hops of 100) and a stream with growing hops give the same mel."""
    t2w = _renderer(gdir)
    prompt, tokens = _inputs(gdir)
    tokens = tokens[:330]
    tap = _MelTap(t2w.vocoder)
    t2w.vocoder = tap
    torch.manual_seed(0)
    offline = t2w.render(prompt, tokens, block_tokens=100)
    offline_mel, offline_calls = tap.stream_mel(), len(tap.mels)
    tap.mels = []
    torch.manual_seed(0)
    streamed = np.concatenate(list(t2w.stream(prompt, [tokens[i:i + 4] for i in range(0, len(tokens), 4)])))
    assert offline.shape == streamed.shape == (len(tokens) * 960,)
    assert offline_mel.shape == tap.stream_mel().shape
    assert (offline_mel - tap.stream_mel()).abs().max().item() < 1e-4
    assert (offline_calls, len(tap.mels)) == (4, 3)  # hops 100, 100, 100, 30 against 45, 100, 185


@pytest.mark.parametrize("gdir", golden_params(E2E))
def test_cached_schedule_must_match_the_flow(gdir):
    t2w = _renderer(gdir)
    prompt, _ = _inputs(gdir)
    with pytest.raises(Token2WavError, match="grid"):
        t2w.start(prompt, StreamSchedule(grid=50, max_hop=200))
    t2w.start(prompt, StreamSchedule(grid=50, max_hop=200, cached=False))  # the re-render path takes any grid
    with pytest.raises(ValueError, match="left_chunks"):
        StreamSchedule(left_chunks=-1)
    with pytest.raises(ValueError, match="cache_dtype"):
        StreamSchedule(cache_dtype="int8")
