"""The command line: every sub-command has --help; bad input gives one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mgm_omni.cli import build_parser, main

COMMANDS = ["tts", "transcribe", "chat", "serve", "demo", "eval", "train", "voices"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mgm-omni {command}")
    assert "--help" in out


def test_top_level_help_lists_all_subcommands():
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def test_servers_bind_to_localhost_by_default():
    parser = build_parser()
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    demo = parser.parse_args(["demo"])
    assert demo.host == "127.0.0.1" and demo.share is False


def test_tts_rejects_empty_text(capsys):
    assert main(["tts", "   "]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mgm-omni tts: error: the text is empty"


def test_tts_missing_text_file(capsys, tmp_path):
    assert main(["tts", "--text-file", str(tmp_path / "nope.txt")]) == 2
    assert "cannot read --text-file" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "mgm_omni.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mgm-omni ")
