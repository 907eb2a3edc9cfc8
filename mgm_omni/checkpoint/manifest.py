"""Checksums of a model directory: ``checksums.json`` lists the sha256 and size of every file it ships.

    write_checksums(root)                 # after assembling the directory
    verify_checksums(root)                # before loading: raises naming every changed or missing file
    verify_checksums(root, ["units/"])    # only the files under some folders (a front-end's own files)

A file is hashed once per process while its size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from mgm_omni.checkpoint import CheckpointError

CHECKSUMS_FILE = "checksums.json"
_CHUNK = 1 << 20
_seen: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


class ChecksumError(CheckpointError):
    """A shipped file is missing or differs from its recorded checksum."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (cached while its size and mtime are unchanged)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _seen:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
        _seen[key] = digest.hexdigest()
    return _seen[key]


def write_checksums(root: str | os.PathLike, skip: Iterable[str] = (".complete",)) -> Path:
    """Record every regular file under ``root`` (but ``skip`` and the manifest itself), sorted by path."""
    root = Path(root)
    skipped = {CHECKSUMS_FILE, *skip}
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skipped:
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    out = root / CHECKSUMS_FILE
    out.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n", encoding="utf-8")
    return out


def read_checksums(root: str | os.PathLike) -> dict[str, dict]:
    """The recorded files of ``root`` ({} when it has no manifest)."""
    path = Path(root) / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("algorithm") != "sha256" or not isinstance(files, dict):
            raise KeyError("algorithm")
    except (ValueError, KeyError, TypeError) as exc:
        raise ChecksumError(f"{path}: not a checksum manifest ({exc})") from None
    return files


def verify_checksums(root: str | os.PathLike, under: Iterable[str] | None = None, required: bool = True) -> int:
    """Check the recorded files of ``root`` (those whose path starts with one of ``under``, if given).

    Returns the number of files checked. Raises :class:`ChecksumError` naming every missing or changed
    file, or, with ``required``, when ``root`` has no manifest at all.
    """
    root = Path(root)
    files = read_checksums(root)
    if not files:
        if required:
            raise ChecksumError(f"{root}: no {CHECKSUMS_FILE}; the directory cannot be verified")
        return 0
    prefixes = tuple(under) if under is not None else None
    bad, checked = [], 0
    for rel, entry in files.items():
        if prefixes is not None and not rel.startswith(prefixes):
            continue
        path = root / rel
        checked += 1
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        elif path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            bad.append(f"{rel} (changed)")
    if bad:
        raise ChecksumError(f"{root}: {len(bad)} file(s) differ from {CHECKSUMS_FILE}: {', '.join(bad[:5])}"
                            + (" ..." if len(bad) > 5 else "") + "; rebuild or re-download the model")
    return checked
