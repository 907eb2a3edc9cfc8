"""Model resolution: ``--model``, the built-in defaults, the local hub cache; the one cache root."""

from mgm_omni.hub.cache import cache_root, voices_root
from mgm_omni.hub.resolve import (
    BUILTIN,
    DEFAULT_BRAIN,
    DEFAULT_MOUTH,
    ResolvedModel,
    default_brain,
    default_mouth,
    resolve_brain,
    resolve_mouth,
)

__all__ = ["BUILTIN", "DEFAULT_BRAIN", "DEFAULT_MOUTH", "ResolvedModel", "cache_root", "default_brain",
           "default_mouth", "resolve_brain", "resolve_mouth", "voices_root"]
