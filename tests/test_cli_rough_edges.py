"""What a new user hits first, each checked before any model loads: missing extras, --device, --out, prompts."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from mgm_omni.cli import extras, main
from mgm_omni.cli.chat import PROMPT, read_turn
from mgm_omni.cli.output import check_output, writable_formats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_models(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    from mgm_omni.generation import pipeline

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(pipeline.TTSPipeline, "load", refuse)


def _one_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"mgm-omni {command}: error: ") and err.count("\n") == 1, err
    return err.strip()


def test_extras_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, requirements in extras.EXTRAS.items():
        assert tuple(project[name]) == requirements, name


@pytest.mark.parametrize("command, absent, expected", [
    (["serve"], {"fastapi", "python-multipart"}, "fastapi, python-multipart. Install them with: "
                                                 "pip install 'mgm-omni[serve]'  (or: pip install fastapi==0.165.0 "
                                                 "python-multipart==0.0.34)"),
    (["demo"], {"gradio"}, "gradio. Install them with: pip install 'mgm-omni[demo]'"),
    (["eval", "--output-dir", "x", "--data-path", "d"], {"jiwer", "matplotlib", "faster-whisper"},
     "jiwer, matplotlib, faster-whisper. Install them with: pip install 'mgm-omni[eval]'"),
])
def test_a_missing_extra_is_named_in_one_message(command, absent, expected, monkeypatch, capsys):
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda dist: dist not in absent and real(dist))
    assert main(command) == 2
    err = _one_error(capsys, command[0])
    assert f"`mgm-omni {command[0]}` needs packages that are not installed: {expected}" in err


def test_eval_asks_only_for_what_the_run_uses(monkeypatch, capsys):
    monkeypatch.setattr(extras, "installed", lambda dist: dist not in {"matplotlib", "faster-whisper"})
    args = ["eval", "--data-path", "/no/such/data", "--output-dir", "x", "--no-plots", "--hypotheses", "h.txt"]
    assert main(args) == 2  # past the package check: the next error is the data path
    assert "no such file or directory" in _one_error(capsys, "eval")


def test_device_is_checked_before_loading(no_models, tmp_path, capsys):
    out = str(tmp_path / "x.wav")
    assert main(["tts", "Hi", "--out", out, "--device", "nonsense"]) == 2
    assert "--device 'nonsense' is not a device name" in _one_error(capsys, "tts")
    if torch.cuda.is_available():  # a GPU machine: a GPU it does not have
        assert main(["tts", "Hi", "--out", out, "--device", "cuda:99"]) == 2
        assert "CUDA GPU(s), numbered 0-" in _one_error(capsys, "tts")
    else:
        assert main(["tts", "Hi", "--out", out, "--device", "cuda"]) == 2
        err = _one_error(capsys, "tts")
        assert "--device cuda: " in err and ("no CUDA support" in err or "no CUDA GPU is usable" in err)
        assert "Traceback" not in err


def test_cuda_on_a_cuda_build_without_a_gpu(no_models, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["transcribe", str(tmp_path / "a.wav"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is usable here" in _one_error(capsys, "transcribe")


def test_output_path_is_checked_before_any_work(no_models, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    cases = {
        f"{tmp_path}/out/": "is a folder; give a file name",
        str(tmp_path): "is a folder; give a file name",
        str(tmp_path / "speech"): "has no extension; add one of .wav",
        str(tmp_path / "speech.txt"): ".txt is not an audio format",
        str(tmp_path / "afile" / "x.wav"): f"{tmp_path / 'afile'} is a file, not a folder",
    }
    for out, message in cases.items():
        assert main(["tts", "Hi", "--out", out]) == 2, out
        assert message in _one_error(capsys, "tts")
    import soundfile as sf

    monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})  # an old libsndfile
    assert main(["tts", "Hi", "--out", str(tmp_path / "x.mp3")]) == 2
    assert ".mp3 is not supported by this machine's libsndfile; use one of .wav, .flac" in _one_error(capsys, "tts")
    assert main(["chat", "-m", "Hi", "--out", str(tmp_path / "reply")]) == 2  # chat speaks into --out too
    assert "has no extension" in _one_error(capsys, "chat")


def test_unwritable_place(tmp_path):
    import os

    from mgm_omni.cli.common import CLIError

    assert check_output(str(tmp_path / "new" / "dir" / "x.flac")).suffix == ".flac"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert {".wav", ".flac"} <= set(writable_formats())
    if Path("/proc/self").is_dir():  # a place nobody can create files in, root included
        with pytest.raises(CLIError, match="--out /proc/x.wav: cannot write in /proc"):
            check_output("/proc/x.wav")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip("running as root: folder permissions do not stop writes")
        with pytest.raises(CLIError, match="cannot write in .*locked"):
            check_output(str(locked / "sub" / "x.wav"))
    finally:
        locked.chmod(0o700)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_interactive_chat_shows_a_prompt(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Terminal("Hello there\n"))
    assert read_turn() == "Hello there"
    assert capsys.readouterr().out == PROMPT
    monkeypatch.setattr(sys, "stdin", _Terminal(""))  # Ctrl-D
    assert read_turn() is None
    assert capsys.readouterr().out == PROMPT + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped\n"))  # a script: no prompt
    assert read_turn() == "piped" and capsys.readouterr().out == ""
