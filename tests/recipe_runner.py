"""Helpers of the recipe tests: run a recipe script in this process, single-thread and deterministic."""

from __future__ import annotations

import contextlib
import functools
import runpy
from pathlib import Path

import torch

from mgm_omni.checkpoint import load_state_dict
from mgm_omni.training.checkpointing import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"


@functools.lru_cache(maxsize=None)
def recipe_main(name: str):
    return runpy.run_path(str(RECIPES / f"{name}.py"), run_name=f"recipe_{name}")["main"]


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(name: str, config: str, *overrides: str, resume: bool = False, stop_after: int | None = None):
    """Run ``recipes/<name>.py --config recipes/configs/<config>.yaml`` with overrides, one thread."""
    argv = ["--config", str(CONFIGS / f"{config}.yaml"), *overrides]
    if resume:
        argv.append("--resume")
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    with one_thread():
        return recipe_main(name)(argv)


def losses(result) -> list[float]:
    return [h["loss"] for h in result.history]


def final_weights(out_dir) -> dict[str, torch.Tensor]:
    """The model tensors of the newest checkpoint in ``out_dir``."""
    return load_state_dict(latest_checkpoint(out_dir))
