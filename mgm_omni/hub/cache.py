"""The cache root (:func:`cache_root`: ``$MGM_OMNI_CACHE``, else ``~/.cache/mgm-omni``) and the folders in it.

Built-in models, the voice registry (``voices/``), converted checkpoints and the native kernel all live under
it, so one variable moves them all (the server honours it too). The root itself is defined in
:mod:`mgm_omni.config.cache` so the lower layers (checkpoint readers) use the same one.
"""

from __future__ import annotations

from pathlib import Path

from mgm_omni.config.cache import CACHE_ENV, cache_root

__all__ = ["CACHE_ENV", "cache_root", "voices_root"]


def voices_root() -> Path:
    """The default folder of the voice registry."""
    return cache_root() / "voices"
