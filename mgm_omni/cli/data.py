"""``mgm-omni data build|stats``: the corpus builder's own sub-commands (``mgm_omni.data.cli``)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from mgm_omni.data.cli import run_data

    return run_data(args)
