"""Training checkpoints for exact resume: atomic writes, keep the last N.

One folder per step, ``<out_dir>/checkpoints/step-00001000/``:

- ``model.safetensors``: full (unsharded) weights, upstream names, readable by :mod:`mgm_omni.checkpoint`
- ``optimizer.pt``: optimiser and scheduler state (``torch.load(weights_only=True)``)
- ``rng.pt``: python / numpy / torch RNG states of every rank
- ``train_state.json``: :class:`TrainState` and the world size; ``config.json`` when given

Every rank calls :func:`save_checkpoint` (under FSDP2 gathering the weights is collective); rank 0 writes
into a temporary folder and renames it into place, so a crash mid-write leaves the previous checkpoint.
Resuming needs the same world size (each rank's RNG and data position are its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from mgm_omni.checkpoint import CheckpointError, load_state_dict, save_state_dict
from mgm_omni.training.loop import TrainState
from mgm_omni.training.rng import get_rng_state, set_rng_state

_STEP_DIR = re.compile(r"^step-(\d+)$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first (temporary folders are ignored)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``out_dir``, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{name: first name}`` for tensors that share storage (tied weights), which are written once."""
    seen: dict[tuple, str] = {}
    tied = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen and t.numel() > 0:
            tied[name] = seen[key]
        else:
            seen[key] = name
    return tied


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(
    out_dir: str | os.PathLike,
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    config: dict[str, Any] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write the checkpoint of ``state.step`` and delete all but the newest ``keep_last``.

    Call on every rank (collective under FSDP2 and for the RNG gather); rank 0 writes. Returns the folder.
    """
    model_sd = get_model_state_dict(model, options=_FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_FULL)
    rng = get_rng_state()
    if dist.is_initialized():
        rngs: list[Any] = [None] * _world()
        dist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    final = checkpoint_dir(out_dir, state.step)
    if _rank() == 0:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_state_dict(model_sd, tmp)
        torch.save(
            {"optimizer": optim_sd, "scheduler": scheduler.state_dict() if scheduler is not None else None},
            tmp / "optimizer.pt",
        )
        torch.save({"ranks": rngs}, tmp / "rng.pt")
        meta = {
            "train_state": dataclasses.asdict(state),
            "world_size": _world(),
            "tied": _tied_names(model_sd),
        }
        (tmp / "train_state.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if config is not None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again: replace it
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        for stale in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    restore_rng: bool = True,
) -> TrainState:
    """Restore a checkpoint in place on every rank and return its :class:`TrainState`.

    Builds on a model wrapped as when it was saved (plain, DDP or FSDP2) and an optimiser and scheduler
    built the same way (build the scheduler before loading: it adds ``initial_lr`` to the parameter
    groups the saved optimiser state carries). With ``restore_rng`` (the default) each rank's RNG states
    are set back too.
    """
    path = Path(path)
    meta_path = path / "train_state.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a training checkpoint (no train_state.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta["world_size"] != _world():
        raise CheckpointError(
            f"{path}: saved with world size {meta['world_size']}, resuming with {_world()}: the data position "
            "and RNG states are per rank, so exact resume needs the same world size"
        )
    weights = load_state_dict(path)
    for name, source in meta.get("tied", {}).items():
        weights[name] = weights[source]
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    if optimizer is not None or scheduler is not None:
        blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        if optimizer is not None:
            set_optimizer_state_dict(
                model, optimizer, blob["optimizer"], options=StateDictOptions(full_state_dict=True)
            )
        if scheduler is not None:
            if blob["scheduler"] is None:
                raise CheckpointError(f"{path}: saved without a scheduler")
            scheduler.load_state_dict(blob["scheduler"])
    if restore_rng:
        rngs = torch.load(path / "rng.pt", weights_only=True)["ranks"]
        set_rng_state(rngs[_rank()])
    return TrainState(**meta["train_state"])
