"""``mgm-omni train STAGE --config FILE [--resume] [--stop-after N] [section.key=value ...]``: run a recipe.

The recipes are scripts in the repository's ``recipes/`` folder (``$MGM_OMNI_RECIPES`` to point elsewhere);
this command runs ``recipes/<STAGE>.py`` in-process with the same arguments its own command line takes. Under
``torchrun`` call the recipe script itself. Importing this module stays light (argparse only).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from mgm_omni.cli.common import CLIError

STAGES = {
    "speech_tokenizer": "25 Hz speech units: k-means over a middle Whisper layer, then unit shards",
    "text_frontend": "the phoneme BPE text front-end of a small mouth",
    "flow": "conditional flow matching from units to the vocoder's mel",
    "speechlm_stage1": "SpeechLM with the LLM frozen: TTS-Adapter and new embeddings",
    "speechlm_stage2": "SpeechLM, everything trained",
    "mllm_stage1": "MLLM audio-to-text: the speech projector (+ optional alignment loss)",
    "mllm_stage2": "MLLM instructions: projector + LoRA / top layers / full LLM",
}

USAGE = "mgm-omni train STAGE --config FILE [--resume] [--stop-after N] [section.key=value ...]"


def _inner_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgm-omni train", usage=USAGE,
                                description="Run a training recipe (recipes/STAGE.py).")
    p.add_argument("stage", choices=sorted(STAGES), metavar="STAGE",
                   help="; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    p.add_argument("--config", required=True, help="the recipe's YAML file (e.g. recipes/configs/flow_small.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.out_dir")
    p.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, values read as YAML (text_frontend: key=value)")
    return p


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` sub-command: everything from STAGE on is parsed by the recipe runner (options and
    overrides in any order, which one argparse level of sub-commands cannot do)."""
    p.usage = USAGE
    p.epilog = _inner_parser().format_help().split("\n", 2)[2]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("train_args", nargs=argparse.REMAINDER, metavar="STAGE ...", help="see below")


def parse_train_args(argv: list[str]) -> argparse.Namespace:
    return _inner_parser().parse_intermixed_args(argv)


def recipes_dir() -> Path:
    """``$MGM_OMNI_RECIPES``, else ``recipes/`` of the source checkout this package runs from."""
    env = os.environ.get("MGM_OMNI_RECIPES")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "recipes"
    if not folder.is_dir():
        raise CLIError(f"no recipes folder at {folder}: the recipes ship with the source repository, not the "
                       "package; run from a checkout or set MGM_OMNI_RECIPES")
    return folder


def _text_frontend_kwargs(overrides: list[str]) -> dict:
    import yaml

    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." in key:
            raise CLIError(f"text_frontend override {item!r}: expected key=value (e.g. vocab_size=2048)")
        out[key] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    args = parse_train_args(args.train_args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = Path(args.config)
    if not config.is_file():
        raise CLIError(f"--config {config}: no such file")
    script = recipes_dir() / f"{args.stage}.py"
    if not script.is_file():
        raise CLIError(f"recipe {script} is missing")
    main = runpy.run_path(str(script), run_name=f"mgm_omni_recipe_{args.stage}")["main"]
    if args.stage == "text_frontend":
        if args.resume or args.stop_after is not None:
            raise CLIError("text_frontend has no steps to resume or stop after")
        main(str(config), **_text_frontend_kwargs(args.overrides))
        return 0
    argv = ["--config", str(config), *args.overrides]
    if args.resume:
        argv.append("--resume")
    if args.stop_after is not None:
        argv += ["--stop-after", str(args.stop_after)]
    result = main(argv)
    last = result.history[-1] if result.history else {}
    summary = f"{args.stage}: step {result.state.step}"
    if "loss" in last:
        summary += f", loss {last['loss']:.4f}"
    if result.extra.get("export"):
        summary += f", exported to {result.extra['export']}"
    print(summary, file=sys.stderr)
    return 0
