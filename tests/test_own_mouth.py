"""Our own mouth end to end on the tiny random variant: text -> phonemes -> rows -> units -> grid flow -> HiFi-GAN.

Two paths agree: streamed audio = offline render, the cached grid flow = one chunk-causal pass; the directory
is checked by its checksums; greedy synthesis is deterministic and as long as its tokens say.
"""

from __future__ import annotations

import dataclasses

import json
import shutil

import numpy as np
import pytest
import torch

from mgm_omni.checkpoint.manifest import ChecksumError, verify_checksums
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.voice import Voice, shipped_voice
from mgm_omni.generation.wave.stream_state import StreamSchedule, Token2WavError

SR, HOP = 22050, 256


@pytest.fixture(scope="module")
def mouth(tiny_own_mouth):
    return tiny_own_mouth


@pytest.fixture(scope="module")
def pipe(mouth):
    from mgm_omni.generation.pipeline import TTSPipeline

    return TTSPipeline.load(mouth, temperature=0.0, max_rows=24)


def test_the_directory_describes_itself_and_is_checksummed(mouth):
    spec = MouthSpec.from_dir(mouth)
    assert (spec.token2wav, spec.speech_tokenizer, spec.speaker_encoder) == ("flow-hifigan", "whisper-units", "ge2e")
    assert (spec.speech_codes, spec.sample_rate, spec.xvector_dim, spec.stream_grid, spec.first_hop) == (32, SR, 256, 5, 5)
    assert spec.silence_code in spec.blank_codes
    files = json.loads((mouth / "checksums.json").read_text())["files"]
    assert {"model.safetensors", "text/tokenizer.json", "units/unit_tokenizer.safetensors", "speaker/ge2e.safetensors",
            "token2wav/flow.safetensors", "voice/prompt.safetensors", "mouth.json", "MODEL_CARD.md"} <= set(files)
    assert verify_checksums(mouth) == len(files)
    assert sum(p.stat().st_size for p in mouth.rglob("*") if p.is_file()) < 50e6


def test_a_changed_or_missing_file_is_refused_before_loading(mouth, tmp_path):
    from mgm_omni.generation.pipeline import load_mouth

    copy = tmp_path / "mouth"
    shutil.copytree(mouth, copy)
    flow = copy / "token2wav" / "flow.safetensors"
    data = bytearray(flow.read_bytes())
    data[-1] ^= 1
    flow.write_bytes(bytes(data))
    (copy / "voice" / "voice.json").unlink()
    with pytest.raises(ChecksumError, match=r"2 file\(s\).*token2wav/flow.safetensors \(changed\).*voice/voice.json \(missing\)"):
        load_mouth(copy)


def test_greedy_synthesis_is_deterministic_and_as_long_as_its_tokens(pipe):
    tokens = []
    chunks = list(pipe.stream("The birch canoe slid. 今天天气很好。", on_row=lambda r: tokens.extend(r.tokens)))
    first, audio = pipe.last, np.concatenate(chunks)  # a stream keeps no audio: the caller joins its chunks
    again = pipe.synthesize("The birch canoe slid. 今天天气很好。")
    assert first.tokens == len(tokens) > 20 and np.array_equal(audio, again.audio)
    grid = pipe.token2wav.grid
    lp = pipe.voice.n_tokens
    assert audio.shape == ((grid.frames(lp + len(tokens)) - grid.frames(lp)) * HOP,) == (first.samples,)
    assert len(chunks) > 1 and np.isfinite(audio).all() and np.abs(audio).max() > 1e-4
    # streaming (hops on the 5-token grid, the vocoder continuing across them) = one offline render
    offline = pipe.token2wav.render(pipe.voice, tokens)
    assert np.abs(offline - audio).max() < 1e-4


def test_first_packet_after_one_small_hop(pipe):
    t2w, voice = pipe.token2wav, pipe.voice
    state = t2w.start(voice, StreamSchedule(grid=5, first_hop=5, max_hop=20))
    hop = state.hop
    assert 5 <= hop < 10 and (voice.n_tokens + hop) % 5 == 0
    assert t2w.push(state, [1] * (hop + 2)) == []  # the look-ahead is not there yet
    packet = t2w.push(state, [2])
    frames = t2w.grid.frames(voice.n_tokens + hop) - t2w.grid.frames(voice.n_tokens)
    assert len(packet) == 1 and packet[0].shape == ((frames - t2w.config.right_frames) * HOP,)
    # a short first vocoder call (stack.json first_piece_frames): the first audio is 4 frames, yielded before
    # the rest of the hop is vocoded, and the hop's audio is the same
    saved = t2w.config
    t2w.config = dataclasses.replace(saved, first_piece_frames=4)
    try:
        state = t2w.start(voice, StreamSchedule(grid=5, first_hop=5, max_hop=20))
        pieces = t2w.push_iter(state, [1] * (hop + 2) + [2])
        head = next(pieces)
        assert head.shape == (4 * HOP,) and state.emitted == 4 * HOP  # nothing else vocoded yet
        assert np.array_equal(np.concatenate([head, *pieces]), packet[0])
    finally:
        t2w.config = saved


def test_stack_refuses_a_schedule_off_its_grid_and_bad_tokens(pipe):
    t2w, voice = pipe.token2wav, pipe.voice
    with pytest.raises(Token2WavError, match="grid"):
        t2w.start(voice, StreamSchedule(grid=25))
    with pytest.raises(Token2WavError, match="cached flow only"):
        t2w.start(voice, StreamSchedule(grid=5, cached=False))
    with pytest.raises(Token2WavError, match=r"\[0, 32\)"):
        t2w.render(voice, [3, 32])


def test_the_shipped_voice_is_the_front_end_of_its_clip(mouth):
    from mgm_omni.generation.wave.frontends import voice_frontend
    from mgm_omni.hub.own_mouth_tiny import reference_clip

    spec = MouthSpec.from_dir(mouth)
    frontend = voice_frontend(spec, mouth)
    made = frontend.prompt(reference_clip(), 16000)
    shipped = shipped_voice(mouth, spec)
    n = made.n_tokens
    assert made.frames_per_token == shipped.frames_per_token == 441 / 128
    assert made.mel.shape == (1, int(n * 441 / 128 + 0.5), 80) and made.xvector.shape == (1, 256)
    assert torch.equal(made.tokens, shipped.tokens) and torch.equal(made.mel, shipped.mel)
    assert abs(float(made.xvector.norm()) - 1.0) < 1e-5 and shipped.frontend == frontend.id
    assert 0 <= int(made.tokens.min()) and int(made.tokens.max()) < 32


def test_voice_checks_the_mel_against_its_own_frame_rate(tmp_path):
    tokens = torch.zeros(1, 10, dtype=torch.int64)
    voice = Voice(tokens, torch.zeros(1, 34, 80), torch.zeros(1, 256), frames_per_token=441 / 128)
    voice.save(tmp_path / "v")
    assert Voice.load(tmp_path / "v").frames_per_token == 441 / 128
    with pytest.raises(ValueError, match="mel must be"):
        Voice(tokens, torch.zeros(1, 20, 80), torch.zeros(1, 256), frames_per_token=441 / 128)


def test_parts_that_do_not_fit_are_named(mouth, tmp_path):
    from mgm_omni.checkpoint import CheckpointError
    from mgm_omni.generation.wave.hifigan_stack import load_hifigan_stack

    spec = MouthSpec.from_dir(mouth)
    with pytest.raises(CheckpointError, match="chunk is 5 tokens but stream_grid is 25"):
        load_hifigan_stack(mouth / "token2wav", MouthSpec.from_dict({**spec.to_dict(), "stream_grid": 25}))
    with pytest.raises(CheckpointError, match="reads 32 codes but the SpeechLM writes 64"):
        load_hifigan_stack(mouth / "token2wav", MouthSpec.from_dict({**spec.to_dict(), "speech_codes": 64}))


def test_a_clip_without_transcript_is_transcribed_when_a_transcriber_is_given(mouth, tmp_path):
    import soundfile as sf

    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.generation.voice import VoiceError
    from mgm_omni.hub.own_mouth_tiny import reference_clip

    clip = tmp_path / "clip.wav"
    sf.write(str(clip), reference_clip(4.0, seed=3).numpy(), 16000)
    heard = []
    pipe = TTSPipeline.load(mouth, ref_audio=clip, max_rows=8,
                            transcriber=lambda wave: heard.append(wave.shape[0]) or "What the clip says.")
    assert pipe.voice.text == "What the clip says." and heard == [64000]
    with pytest.raises(VoiceError, match="--ref-text"):
        TTSPipeline.load(mouth, ref_audio=clip)
