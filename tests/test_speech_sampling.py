"""Speech-id sampling (greedy, temperature, top-k, top-p, repetition penalty) and the vocoder token
stream extraction (delay rows, closing eos rows, stray eos, END row, strict mode)."""

from __future__ import annotations

import math

import pytest
import torch

from mgm_omni.generation.speech.chunk_state import ChunkRules, ChunkState, RowKind
from mgm_omni.generation.sampling import SamplingConfig, SamplingError, apply_repetition_penalty, mark_seen, sample
from mgm_omni.generation.speech.prompt import SpecialIds
from mgm_omni.text import BPEFrontEnd
from mgm_omni.generation.speech.token_stream import (
    SILENCE_CODE,
    TokenStreamError,
    VocoderTokenStream,
    official_vocoder_tokens,
    vocoder_tokens,
)

IDS = SpecialIds(pad_text=20, eos_text=21, audio_start=22, audio_end=23, audio_sep=24, speech_eos=6561,
                 speech_pad=6562)
PAD, EOS = 6562, 6561


def test_greedy_is_argmax_and_penalty_moves_it():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.5, -2.0, -0.1, 0.4]])
    assert sample(logits, SamplingConfig(temperature=0)).tolist() == [1, 0]
    seen = torch.zeros(2, 4, dtype=torch.bool)
    mark_seen(seen, torch.tensor([1, 0]))
    cfg = SamplingConfig(temperature=0, repetition_penalty=2.0)
    assert sample(logits, cfg, seen).tolist() == [2, 3]  # 3.0 / 2 < 2.0 ; 0.5 / 2 < 0.4
    neg = apply_repetition_penalty(torch.tensor([[-1.0, 1.0]]), torch.tensor([[True, True]]), 2.0)
    assert neg.tolist() == [[-2.0, 0.5]]  # negative logits are multiplied, positive divided


def test_top_k_top_p_and_temperature():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=gen)
    best = logits.argmax(-1)
    for cfg in (SamplingConfig(temperature=1.5, top_k=1), SamplingConfig(temperature=1.0, top_k=0, top_p=1e-6)):
        assert torch.equal(sample(logits, cfg, generator=gen), best)
    top2 = logits.topk(2, dim=-1).indices
    picks = sample(logits.repeat(20, 1), SamplingConfig(temperature=5.0, top_k=2), generator=gen)
    assert (picks[:, None] == top2.repeat(20, 1)).any(-1).all()
    # plain sampling follows softmax(logits / T): p = (0.25, 0.75) at T = 1
    two = torch.tensor([[0.0, math.log(3.0)]]).repeat(8000, 1)
    freq = sample(two, SamplingConfig(temperature=1.0, top_k=0), generator=gen).float().mean().item()
    assert abs(freq - 0.75) < 0.03
    # top_p = 0.7 keeps only the 0.75 id
    assert sample(two, SamplingConfig(temperature=1.0, top_k=0, top_p=0.7), generator=gen).eq(1).all()


def test_sampling_config_validation():
    for bad in (dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5), dict(repetition_penalty=0)):
        with pytest.raises(SamplingError):
            SamplingConfig(**bad)
    cfg = SamplingConfig.from_generation_config({"top_k": 20, "top_p": 0.8, "repetition_penalty": 1.1}, 0.3)
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty) == (0.3, 20, 0.8, 1.1)


def _rows(*specs):
    return [tuple(r) for r in specs]


def test_token_stream_rules():
    rows = _rows(
        [1, PAD, PAD, PAD, PAD], [2, PAD, PAD, PAD, PAD],  # delay rows (P = 2 here)
        [3, 10, 11, 12, 13],
        [4, EOS, EOS, EOS, EOS],  # stray all-eos row inside the chunk: silence, timing kept
        [5, 14, EOS, 15, PAD],  # stray eos / pad ids inside a kept row: silence
        [20, EOS, EOS, EOS, EOS],  # the closing row
        [24, PAD, PAD, PAD, PAD],  # separator
        [6, PAD, PAD, PAD, PAD], [7, PAD, PAD, PAD, PAD], [20, 16, 17, 18, 19],
        [20, EOS, EOS, EOS, EOS], [23, PAD, PAD, PAD, PAD], [21, 99, 98, 97, 96],  # audio_end, END (ignored)
    )
    s = SILENCE_CODE
    expected = [10, 11, 12, 13, s, s, s, s, 14, s, 15, s, 16, 17, 18, 19]
    assert vocoder_tokens(rows, IDS, delay_rows=2) == expected
    stream = VocoderTokenStream(IDS, delay_rows=2)
    released = [stream.push(r) for r in rows]
    assert sum(released, []) + stream.finish() == expected
    assert released[3] == [] and released[4] == [s] * 4 + [14, s, 15, s]  # the eos row waits one row
    # the official rule with the same P gives the same stream here; with P = 1 it keeps a delay row
    assert official_vocoder_tokens(rows, IDS, pre_pad=2) == expected
    assert official_vocoder_tokens(rows, IDS, pre_pad=1)[:4] == [s] * 4
    with pytest.raises(TokenStreamError, match="delay row"):
        vocoder_tokens(_rows([1, 5, PAD, PAD, PAD]), IDS, delay_rows=1, strict=True)
    lenient = VocoderTokenStream(IDS, delay_rows=1)
    lenient.push([1, 5, PAD, PAD, PAD])
    assert lenient.delay_violations == 1
    assert vocoder_tokens(rows[:4], IDS, delay_rows=2) == [10, 11, 12, 13]  # cut after an eos row: dropped


def test_omni_mode_waits_for_text():
    class Tok:
        pad_token_id, eos_token_id = IDS.pad_text, IDS.eos_text

        def decode(self, ids):
            return {11: "**"}.get(ids[0], " w")

    state = ChunkState([], IDS, ChunkRules(), BPEFrontEnd(Tok()), slots=4, text_final=False)
    assert not state.ready()  # nothing to place yet: the speech track waits (spec §2.9 #4)
    state.push_text([11])
    assert not state.ready()  # only markdown so far
    state.push_text([5, 6])
    assert state.ready()
    rows = [state.next_row([1, 2, 3, 4]) for _ in range(2)]
    assert [r.row[0] for r in rows] == [5, 6]  # the '**' was skipped at the chunk start
    assert not state.ready()  # buffer empty, MLLM still running: no chunk end, wait
    state.finish_text()
    r = state.next_row([EOS] * 4)  # MLLM done, buffer empty: PAD starts on this row and all-eos closes it
    assert r.kind is RowKind.CLOSE and r.row[0] == IDS.pad_text and r.abort is None
    assert state.next_row([1, 2, 3, 4]).row[0] == IDS.audio_end
    assert state.next_row([1, 2, 3, 4]).kind is RowKind.END and state.done
