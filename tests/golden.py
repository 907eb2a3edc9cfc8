"""Locate golden reference sets and the cases inside them.

Golden vectors live under ``$MGM_GOLDEN_DIR`` (default ``../shared/golden`` next to the repository).
Every test that uses them runs once per set found there, so the suite can be pointed at any other
set in the same format. Where nothing is found the test is skipped with the reason.

Nothing about a set's contents is assumed here beyond its layout: the decode cases are whatever
``speechlm/decode/*.json`` holds (each names its checkpoint), the SpeechLM checkpoint is whichever
``speechlm/*/`` folder holds a ``config.json``, and a checkpoint variant ``X`` is the base checkpoint
with the rows in ``speechlm/X_rows.safetensors`` written over the tensor its metadata names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SPEECHLM_CONFIG = "speechlm/*/config.json"  # marker of a set with a tiny SpeechLM checkpoint
DECODE_STEPS = "speechlm/decode/decode_steps.npz"  # marker of a set with decode cases


def golden_root() -> Path:
    env = os.environ.get("MGM_GOLDEN_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "golden").resolve()


def find_golden(marker: str, max_depth: int = 4) -> list[Path]:
    """Every directory under the golden root that holds ``marker`` (a relative path, glob allowed).

    Returns the directories *containing* the marker, sorted, searching at most ``max_depth`` levels.
    """
    root = golden_root()
    if not root.is_dir():
        return []
    found = []
    for depth in range(max_depth + 1):
        pattern = "/".join(["*"] * depth + [marker]) if depth else marker
        for hit in root.glob(pattern):
            if hit.is_file():
                found.append(hit)
    dirs = sorted({_strip(hit, marker) for hit in found})
    return dirs


def _strip(hit: Path, marker: str) -> Path:
    path = hit
    for _ in Path(marker).parts:
        path = path.parent
    return path


def _set_id(gdir: Path) -> str:
    return str(gdir.relative_to(golden_root())) or "."


def _no_set(marker: str) -> list:
    reason = f"no golden set with {marker!r} under {golden_root()} (set MGM_GOLDEN_DIR to a golden folder)"
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-golden")]


def golden_params(marker: str) -> list:
    """``pytest.mark.parametrize`` values: one per golden set holding ``marker``, or one skip."""
    dirs = find_golden(marker)
    if not dirs:
        return _no_set(marker)
    return [pytest.param(d, id=_set_id(d)) for d in dirs]


# ------------------------------------------------------------------------------ SpeechLM checkpoint


def speechlm_checkpoint(gdir: Path) -> Path:
    """The tiny SpeechLM checkpoint folder of a set: the one ``speechlm/*/`` folder with a ``config.json``."""
    hits = sorted(p.parent for p in (gdir / "speechlm").glob("*/config.json"))
    if len(hits) != 1:
        raise AssertionError(f"golden set {gdir} needs exactly one speechlm/*/config.json, found {hits}")
    return hits[0]


def speechlm_config(gdir: Path) -> dict:
    return json.loads((speechlm_checkpoint(gdir) / "config.json").read_text())


def variant_rows(gdir: Path, checkpoint: str) -> Path | None:
    """The rows file that turns the base checkpoint into ``checkpoint``, or None for the base itself."""
    path = gdir / "speechlm" / f"{checkpoint}_rows.safetensors"
    return path if path.is_file() else None


def apply_variant(model, rows_file: Path) -> None:
    """Overwrite ``rows[row_ids]`` of the tensor named in the file's metadata (the README's recipe)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(rows_file), "pt") as f:
        name = (f.metadata() or {}).get("tensor_name", "model.embed_tokens.weight")
    patch = load_file(str(rows_file))
    params = dict(model.named_parameters())
    if name not in params:
        raise AssertionError(f"{rows_file.name}: tensor {name!r} is not a parameter of {type(model).__name__}")
    with torch.no_grad():
        params[name][patch["row_ids"].long()] = patch["rows"].to(params[name].dtype)


# ------------------------------------------------------------------------------------ decode cases


def decode_cases(gdir: Path) -> list[str]:
    """Names of a set's decode cases: the stems of ``speechlm/decode/*.json``, sorted."""
    return sorted(p.stem for p in (gdir / "speechlm" / "decode").glob("*.json"))


def load_case(gdir: Path, name: str) -> dict:
    """One decode case (its JSON), with ``name`` added."""
    data = json.loads((gdir / "speechlm" / "decode" / f"{name}.json").read_text(encoding="utf-8"))
    return {**data, "name": name}


def case_params(select=None) -> list:
    """``parametrize`` values ``(set_dir, case_name)``: every decode case of every set found.

    ``select(case_dict) -> bool`` keeps only some cases; a set without any gives one skip.
    """
    params = []
    for gdir in find_golden(DECODE_STEPS):
        for name in decode_cases(gdir):
            if select is None or select(load_case(gdir, name)):
                params.append(pytest.param((gdir, name), id=f"{_set_id(gdir)}/{name}"))
    return params or _no_set(DECODE_STEPS)


def cases_by_checkpoint(gdir: Path) -> dict[str, list[dict]]:
    """Every decode case of a set, grouped by the checkpoint it was decoded with (in name order)."""
    groups: dict[str, list[dict]] = {}
    for name in decode_cases(gdir):
        case = load_case(gdir, name)
        groups.setdefault(case["checkpoint"], []).append(case)
    return groups
