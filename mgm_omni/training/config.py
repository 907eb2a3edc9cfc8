"""Training configs: YAML at the edge, read into dataclasses that check themselves in ``__post_init__``.

A recipe keeps its own dataclasses (model, data) beside :class:`TrainConfig` and reads them all with
:func:`from_dict`, which also fills nested dataclass fields and names unknown keys with a hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mgm_omni.config import ConfigError

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("cosine", "constant")
STRATEGIES = ("none", "ddp", "fsdp")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class LoaderConfig:
    """DataLoader settings. Two workers keep two cores busy while the main process trains."""

    num_workers: int = 2
    persistent_workers: bool = True
    prefetch_factor: int = 2
    pin_memory: bool = False

    def __post_init__(self) -> None:
        _require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _require(self.prefetch_factor >= 1, f"prefetch_factor must be >= 1, got {self.prefetch_factor}")


@dataclass
class TrainConfig:
    """What every stage shares: optimiser, schedule, batch budget, precision, cadence, output.

    ``max_tokens`` is the padded budget of one micro-batch (batch size x longest item); one optimiser
    step consumes ``accum_steps`` micro-batches per rank.
    """

    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 100
    max_steps: int = 1000
    max_tokens: int = 4096
    max_batch_size: int | None = None
    num_buckets: int = 8
    accum_steps: int = 1
    clip_norm: float | None = 1.0
    precision: str = "bf16"
    seed: int = 0
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    out_dir: str = "outputs/train"
    strategy: str = "none"
    loader: LoaderConfig = field(default_factory=LoaderConfig)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives a list
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _require(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        _require(
            0 <= self.warmup_steps <= self.max_steps,
            f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}",
        )
        _require(self.max_tokens > 0, f"max_tokens must be > 0, got {self.max_tokens}")
        _require(self.max_batch_size is None or self.max_batch_size > 0, "max_batch_size must be > 0")
        _require(self.num_buckets >= 1, f"num_buckets must be >= 1, got {self.num_buckets}")
        _require(self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}")
        _require(self.clip_norm is None or self.clip_norm > 0, "clip_norm must be > 0 or null (no clipping)")
        _require(
            self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"
        )
        _require(self.ckpt_every > 0 and self.log_every > 0, "ckpt_every and log_every must be > 0")
        _require(self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}")
        _require(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from a mapping; nested dataclass fields take nested mappings.

    Raises:
        ConfigError: unknown key (with the closest name), wrong shape, or a failed ``__post_init__`` check.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            hint = difflib.get_close_matches(key, sorted(names), n=1)
            raise ConfigError(
                f"unknown key {key!r} for {cls.__name__}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        sub = hints.get(key)
        kwargs[key] = (
            from_dict(sub, value) if dataclasses.is_dataclass(sub) and isinstance(value, dict) else value
        )
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain form of a config dataclass (tuples as lists), as saved beside each checkpoint."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def read_yaml(path: str | os.PathLike, section: str | None = None) -> dict[str, Any]:
    """Parse a YAML file (optionally one top-level ``section`` of it) into a dict."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ConfigError(f"{path}: no top-level section {section!r}")
        data = data[section]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_train_config(
    path: str | os.PathLike, section: str | None = "train", **overrides: Any
) -> TrainConfig:
    """Read :class:`TrainConfig` from a YAML file (by default its ``train:`` section), then apply overrides."""
    data = read_yaml(path, section)
    data.update(overrides)
    return from_dict(TrainConfig, data)
