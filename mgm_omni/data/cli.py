"""``data build`` and ``data stats``: thin sub-commands around ``build_corpus`` and ``stats_for_path``.

``add_data_parser(subparsers)`` registers them on any argparse subparsers object (the main CLI mounts it);
``python -m mgm_omni.data build|stats ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import sys


def _budget(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected family/lang=NUMBER, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number after '=', got {value!r}") from exc


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    try:
        return float(lo), float(hi or lo)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from exc


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` with its ``build`` and ``stats`` sub-commands; returns the ``data`` parser."""
    data = subparsers.add_parser("data", help="build a multi-speaker EN/ZH TTS corpus; corpus statistics",
                                 description="Offline corpus builder (allowed voices only) and statistics.")
    sub = data.add_subparsers(dest="data_command", metavar="{build,stats}")
    sub.required = True
    b = sub.add_parser("build", help="render sentences into speech with transcripts and manifests",
                       description="Render a corpus. Options override the YAML config; reruns resume.")
    b.add_argument("--config", help="YAML config (keys as in mgm_omni.data.config.CorpusConfig)")
    b.add_argument("--out", help="output directory")
    b.add_argument("--langs", type=_csv, help="languages, e.g. en,zh")
    b.add_argument("--hours", type=_budget, action="append", metavar="FAMILY/LANG=H",
                   help="hours for a voice family and language, e.g. espeak/en=3.5 (repeatable)")
    b.add_argument("--sentences", type=_budget, action="append", metavar="FAMILY/LANG=N",
                   help="sentence count for a voice family and language, e.g. flite/en=200 (repeatable)")
    b.add_argument("--voices", type=_csv, help="use only these voices (engine:name, comma-separated) as speakers")
    b.add_argument("--dev-speakers", type=_csv, help="speaker ids held out as whole speakers")
    b.add_argument("--sources-en", type=_csv, help="English text sources (fortunes,wordnet,hsk-en,file:PATH)")
    b.add_argument("--sources-zh", type=_csv, help="Mandarin text sources (fortunes-zh,hsk-zh,file:PATH)")
    b.add_argument("--longform", type=int, dest="longform_count", help="number of long-form items")
    b.add_argument("--longform-minutes", type=_range, help="long-form length range in minutes, e.g. 2,5")
    b.add_argument("--pairs-per-speaker", type=int, help="clone pairs per speaker, language and split")
    b.add_argument("--format", dest="audio_format", choices=("flac", "wav"), help="audio format (default flac)")
    b.add_argument("--jobs", type=int, help="worker processes (default 1)")
    b.add_argument("--seed", type=int, help="seed of the plan (default 0)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--plan-only", action="store_true", help="check everything and print the plan; render nothing")
    s = sub.add_parser("stats", help="print hours per voice family, speaker and language",
                       description="Statistics of a built corpus.")
    s.add_argument("path", help="corpus directory or manifest.jsonl")
    return data


def run_data(args) -> int:
    """Run ``data build`` or ``data stats``; one-line error and exit code 2 on bad input."""
    from .config import ConfigError, load_config
    from .engines import EngineError
    from .text_sources import SourceError
    from .voices import VoiceError

    try:
        if args.data_command == "stats":
            from .stats import stats_for_path

            print(stats_for_path(args.path))
            return 0
        from .build import build_corpus

        sources = {lang: v for lang, v in (("en", args.sources_en), ("zh", args.sources_zh)) if v}
        cfg = load_config(
            args.config, out=args.out, langs=args.langs, jobs=args.jobs, seed=args.seed,
            hours=dict(args.hours) if args.hours else None,
            sentences={k: int(v) for k, v in args.sentences} if args.sentences else None,
            voices=args.voices, dev_speakers=args.dev_speakers, sources=sources or None,
            longform_count=args.longform_count, longform_minutes=args.longform_minutes,
            pairs_per_speaker=args.pairs_per_speaker, audio_format=args.audio_format)
        report = build_corpus(cfg, progress=not args.no_progress, plan_only=args.plan_only)
        if args.plan_only:
            return 0
        print(f"{report.manifest}: {report.rendered} rendered, {report.skipped} resumed, {report.failed} failed"
              + (" (see failures.jsonl; a rerun retries them)" if report.failed else ""))
        return 1 if report.failed else 0
    except (ConfigError, VoiceError, SourceError, EngineError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgm_omni.data")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    add_data_parser(sub)
    # ``python -m mgm_omni.data build ...``: the data sub-commands without the leading "data".
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] != "data" and argv[0] not in ("-h", "--help"):
        argv = ["data", *argv]
    return run_data(parser.parse_args(argv))
