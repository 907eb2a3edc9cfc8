"""The one cache root of mgm-omni: ``$MGM_OMNI_CACHE``, else ``~/.cache/mgm-omni``.

Built-in models, converted checkpoints (Whisper, GGUF), the voice registry (``voices/``) and the native kernel
all live under it, so one variable moves them all (the server honours it too). It is defined here, in the
lowest layer, so checkpoint readers and generation code can reach it; :mod:`mgm_omni.hub.cache` is where the
rest of the package takes it from.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MGM_OMNI_CACHE"


def cache_root() -> Path:
    """``$MGM_OMNI_CACHE`` if set, else ``~/.cache/mgm-omni`` (read at each call: tests and servers may set it)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mgm-omni").expanduser()
