"""Handlers of the ``mgm-omni`` sub-commands: read inputs, call the pipeline, write outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgm_omni.cli import TINY_MODEL, CLIError

MAX_TEXT_CHARS = 1_000_000


def _read_text(args: argparse.Namespace) -> str:
    if args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read --text-file {args.text_file}: {exc}") from exc
    elif args.text == "-":
        text = sys.stdin.read()
    elif args.text is not None:
        text = args.text
    else:
        raise CLIError("no text given: pass TEXT, '-' for stdin, or --text-file")
    if not text.strip():
        raise CLIError("the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise CLIError(f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return text


def run_tts(args: argparse.Namespace) -> int:
    text = _read_text(args)  # validate input before loading anything heavy
    from mgm_omni.generation import pipeline

    model = args.model or pipeline.default_speechlm()
    if model == TINY_MODEL:
        print(
            "NOTE: no trained default model is available on this machine, so this runs the whole pipeline on a "
            f"tiny RANDOM model ('{TINY_MODEL}'): the output is noise-like audio, not speech. Pass --model with "
            "an MGM-Omni-TTS checkpoint directory for real speech.",
            file=sys.stderr,
        )
    result = pipeline.synthesize_to_file(
        text, args.out, model=model, ref_audio=args.ref_audio, ref_text=args.ref_text,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, max_rows=args.max_rows,
        seed=args.seed, device=args.device, dtype=args.dtype, cosyvoice_path=args.cosyvoice_path,
    )
    print(result.summary())
    return 0


def _not_yet(what: str) -> int:
    raise CLIError(f"{what} is not available in this version of mgm-omni yet")


def run_transcribe(args: argparse.Namespace) -> int:
    return _not_yet("`transcribe` (the MLLM understanding track)")


def run_chat(args: argparse.Namespace) -> int:
    return _not_yet("`chat` (omni generation)")


def run_serve(args: argparse.Namespace) -> int:
    return _not_yet("`serve` (the HTTP API)")


def run_demo(args: argparse.Namespace) -> int:
    return _not_yet("`demo` (the web demo)")


def run_eval(args: argparse.Namespace) -> int:
    return _not_yet("`eval` (the evaluation harness)")


def run_train(args: argparse.Namespace) -> int:
    return _not_yet("`train` (training recipes)")


def run_voices(args: argparse.Namespace) -> int:
    return _not_yet("`voices` (the voice registry)")
