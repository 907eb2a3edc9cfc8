"""Choices measured once per machine (the SpeechLM decode step, the vocoder's precision), kept on disk.

A choice is stored in a JSON file of ``$MGM_OMNI_CACHE`` (default ``~/.cache/mgm-omni``) under a key that
starts with :func:`machine_key` (the CPU model and a digest of its feature flags), so a shared cache never
hands one CPU's measurement to another. Writes are atomic; an unreadable file reads as empty.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from mgm_omni.generation.speech.native_build import _cpu_signature, cache_dir

log = logging.getLogger(__name__)


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo, or "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine_key() -> str:
    """The CPU model and a digest of its flags: the part of a cached choice's key that names the machine."""
    return f"{cpu_model()}|{hashlib.sha256(_cpu_signature().encode()).hexdigest()[:12]}"


def choice_file(name: str) -> Path:
    """The choice file ``name`` in ``$MGM_OMNI_CACHE``."""
    return cache_dir().parent / name


def read_choices(name: str) -> dict:
    try:
        return json.loads(choice_file(name).read_text())
    except (OSError, ValueError):
        return {}


def write_choice(name: str, key: str, value: dict) -> None:
    """Store ``value`` under ``key`` in the choice file ``name``; a read-only cache is logged, not raised."""
    path = choice_file(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = read_choices(name)
        data[key] = value
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: concurrent writers never leave a half-written file
    except OSError as exc:
        log.info("could not store the choice in %s: %s", path, exc)
