"""``mgm-omni chat --audio-file q.wav --no-speech``: the audio alone is the question (it once crashed on the
truth value of the audio tensor before any reply)."""

from __future__ import annotations

import io

import numpy as np


def test_chat_answers_an_audio_file_alone(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from mgm_omni.cli import main

    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no typed turns: the audio is the only one
    wav = tmp_path / "q.wav"
    sf.write(str(wav), 0.1 * np.sin(np.arange(32000) / 5.0).astype(np.float32), 16000)
    args = ["chat", "--model", "tiny-random", "--audio-file", str(wav), "--no-speech", "--max-new-tokens", "3",
            "--temperature", "0"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.count("assistant: ") == 1 and "3 tokens in" in err
