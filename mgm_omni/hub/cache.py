"""The one cache root of mgm-omni: ``$MGM_OMNI_CACHE``, else ``~/.cache/mgm-omni``.

Built-in models, the voice registry (``voices/``), converted checkpoints and the native kernel all live under
it, so one variable moves them all (the server honours it too).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MGM_OMNI_CACHE"


def cache_root() -> Path:
    """``$MGM_OMNI_CACHE`` if set, else ``~/.cache/mgm-omni`` (read at each call: tests and servers may set it)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mgm-omni").expanduser()


def voices_root() -> Path:
    """The default folder of the voice registry."""
    return cache_root() / "voices"
