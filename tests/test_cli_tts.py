"""`mgm-omni tts` end to end on the built-in tiny model: any supported --out format, one progress bar to 100 %,
the same audio as the pipeline called directly, tts_error explained, voice names ignoring case and OpenAI's."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.cli import main

TEXT = "Short test."
ARGS = ["--model", "tiny-random", "--temperature", "0", "--max-rows", "24"]


@pytest.fixture(scope="module")
def direct(tiny_cache):
    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.hub import resolve_mouth

    pipe = TTSPipeline.load(resolve_mouth("tiny-random").path, temperature=0.0, max_rows=24)
    return pipe.synthesize(TEXT)


def test_tts_writes_the_pipelines_audio_with_one_bar(direct, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MGM_OMNI_PROGRESS", "1")
    out = tmp_path / "speech.flac"
    assert main(["tts", TEXT, "--out", str(out), *ARGS]) == 0
    captured = capsys.readouterr()
    wave, sr = sf.read(out)
    assert sf.info(str(out)).format == "FLAC" and sr == direct.sample_rate
    expected = np.clip(direct.audio, -1.0, 1.0)  # 16-bit files clip (the random vocoder overshoots)
    assert wave.shape == expected.shape and np.abs(wave - expected).max() <= 1.5 / 32768
    bars = [s for s in captured.err.replace("\r", "\n").split("\n") if s.startswith("speaking:")]
    assert bars and "100%" in bars[-1] and bars[-1].count("%|") == 1  # one bar, drawn to its end
    assert all("speaking: " in b for b in bars) and not any(b.startswith("speaking: ") and "row/s" in b for b in bars)
    assert f"s of audio -> {out}" in captured.out and "RTF" in captured.out
    if direct.tts_error:  # the random model trips the safeguard: said in words, with what was kept
        assert "tts_error: chunk 1 of the text was cut off" in captured.err
        assert f"Kept: all {direct.audio_seconds:.2f} s of audio in {out}" in captured.err
    if direct.finish_reason == "max_rows":
        assert "note: decoding stopped at the row limit (--max-rows)" in captured.err


def test_voice_names_ignore_case_and_map_openai_names(tiny_cache, tmp_path, capsys):
    voices = ["--voices-dir", str(tmp_path / "voices")]
    written = {}
    for name in ("alpha", "ALPHA", "nova", "rms"):
        out = tmp_path / f"{name}.wav"
        assert main(["tts", TEXT, "--voice", name, "--out", str(out), *ARGS, *voices]) == 0, capsys.readouterr().err
        written[name] = sf.read(out)[0]
    assert np.array_equal(written["alpha"], written["ALPHA"]) and np.array_equal(written["alpha"], written["nova"])
    assert not np.array_equal(written["alpha"], written["rms"])  # a different voice does sound different
    capsys.readouterr()
    assert main(["tts", TEXT, "--voice", "nobody", "--out", str(tmp_path / "x.wav"), *ARGS, *voices]) == 2
    assert "no voice named 'nobody'" in capsys.readouterr().err


def test_voices_list_shows_real_lengths(tiny_cache, tmp_path, capsys):
    from mgm_omni.engine.voices import PRESET_DIR

    assert main(["voices", "list", "--model", "tiny-random", "--voices-dir", str(tmp_path / "voices")]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    for name in ("alpha", "rms"):  # a preset's length is its clip's
        assert float(rows[name][2]) == pytest.approx(sf.info(str(PRESET_DIR / f"{name}.flac")).duration, abs=0.01)
    assert float(rows["default"][2]) == pytest.approx(4.0)  # the tiny model's synthetic voice: 100 tokens at 25 Hz
