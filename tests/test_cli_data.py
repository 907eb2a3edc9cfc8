"""``mgm-omni data``: the corpus builder is mounted on the main CLI."""

from __future__ import annotations

from mgm_omni.cli import build_parser, main


def test_data_is_a_subcommand_with_build_and_stats():
    args = build_parser().parse_args(["data", "stats", "some/manifest.jsonl"])
    assert args.command == "data" and args.data_command == "stats"


def test_data_build_refuses_a_reserved_voice_before_any_work(tmp_path, capsys):
    out = tmp_path / "corpus"
    code = main(["data", "build", "--out", str(out), "--voices", "flite:slt", "--sentences", "flite/en=2"])
    assert code != 0
    assert "slt" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
