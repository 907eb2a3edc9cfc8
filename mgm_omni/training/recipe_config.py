"""A recipe's YAML: top-level sections (``train``, ``model``, ``data``, ...) plus ``section.key=value`` overrides.

Relative paths in a recipe config are relative to the working directory (run recipes from the repository
root). Values of overrides are read as YAML (``train.max_steps=2``, ``train.betas=[0.9,0.99]``,
``data.manifests=[a.jsonl]``); the key must name an existing section.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mgm_omni.config import ConfigError
from mgm_omni.training.config import read_yaml


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], sections: bool = True) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries in ``data`` (in place; returns it). ``sections=False`` is for flat configs
    (the mouth assembly and gate recipes): a plain ``key=value`` is allowed and any first part is created.

    Raises:
        ConfigError: an override without ``=`` or (with ``sections``) a dotted key, or whose first part is not a
            section.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < (2 if sections else 1) or not all(parts):
            expected = "section.key=value (e.g. train.max_steps=10)" if sections else "key=value"
            raise ConfigError(f"override {item!r}: expected {expected}")
        if sections and parts[0] not in data:
            raise ConfigError(f"override {item!r}: the config has no section {parts[0]!r} "
                              f"(sections: {sorted(data)})")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a mapping")
        node[parts[-1]] = _value(raw)
    return data


def _value(raw: str) -> Any:
    """YAML value of an override; ``1e-3`` is a float here (YAML 1.1 would read it as a string)."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_recipe_config(path: str | os.PathLike, overrides: Sequence[str] = (),
                       sections: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML of a recipe with overrides applied; ``sections`` must all be present (as mappings)."""
    data = apply_overrides(read_yaml(path), overrides)
    for name in sections:
        if not isinstance(data.get(name), dict):
            raise ConfigError(f"{path}: section {name!r} is missing (or not a mapping)")
    unknown = sorted(set(data) - set(sections)) if sections else []
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; this recipe reads {list(sections)}")
    return data


@dataclass
class RecipeArgs:
    """A recipe's command line: ``--config FILE [--resume] [--stop-after N] [section.key=value ...]``."""

    config: str
    resume: bool = False
    stop_after: int | None = None
    overrides: list[str] = field(default_factory=list)


def parse_recipe_args(argv: Sequence[str] | None, description: str) -> RecipeArgs:
    """Parse a recipe's arguments (``argv`` None: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="recipe YAML file")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps, before max_steps")
    parser.add_argument("overrides", nargs="*", help="section.key=value (YAML values), e.g. train.max_steps=10")
    args = parser.parse_intermixed_args(argv)  # overrides before and after the options
    return RecipeArgs(args.config, args.resume, args.stop_after, list(args.overrides))
