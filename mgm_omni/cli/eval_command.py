"""``mgm-omni eval``: score generated speech or transcripts on benchmarks."""

from __future__ import annotations

import argparse

from mgm_omni.cli.extras import require_for_eval


def run(args: argparse.Namespace) -> int:
    require_for_eval(args)  # every missing package named at once, before any work
    from mgm_omni.eval.runner import run_from_args

    return run_from_args(args)

