"""Locate golden reference sets.

Golden vectors live under ``$MGM_GOLDEN_DIR`` (default ``../shared/golden`` next to the repository).
Every test that uses them runs once per set found there, so the suite can be pointed at any other
set in the same format. Where nothing is found the test is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_root() -> Path:
    env = os.environ.get("MGM_GOLDEN_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "golden").resolve()


def find_golden(marker: str, max_depth: int = 4) -> list[Path]:
    """Every directory under the golden root that holds ``marker`` (a relative file path).

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


def golden_params(marker: str) -> list:
    """``pytest.mark.parametrize`` values: one per golden set holding ``marker``, or one skip."""
    dirs = find_golden(marker)
    if not dirs:
        reason = f"no golden set with {marker!r} under {golden_root()} (set MGM_GOLDEN_DIR to a golden folder)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-golden")]
    root = golden_root()
    return [pytest.param(d, id=str(d.relative_to(root)) or ".") for d in dirs]
