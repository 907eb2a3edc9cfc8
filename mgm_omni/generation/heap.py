"""Keeping the C heap from growing in long runs (glibc).

Long-form speech allocates and frees many tensors of slowly changing sizes (flow chunk caches, mel and audio
hops, attention scratch). glibc's allocator serves blocks of up to 32 MB from its heaps and keeps the pages of
freed blocks: the process's RSS grew by several MB per second of audio while the live tensors stayed at ~110 MB
(own-small mouth, 43.5 s of speech on one thread: 748 MB at the end). :class:`HeapTrim` hands the free pages
back (glibc's ``malloc_trim``) once per ``every_s`` seconds of audio made: 627 MB at the end, for +5 % CPU
time. Serving large blocks by ``mmap`` instead (``M_MMAP_THRESHOLD`` 256 KB / 1 MB) gave the same RSS for
+41-47 % CPU time (page faults on every large block), so it is not used.

``MGM_OMNI_HEAP_TRIM_SECONDS`` overrides ``every_s`` (0 turns trimming off). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "MGM_OMNI_HEAP_TRIM_SECONDS"
DEFAULT_EVERY_S = 10.0


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_TRIM = _malloc_trim()


def trim_heap() -> bool:
    """Return the free pages of every glibc heap to the system; False where there is no ``malloc_trim``."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def trim_interval() -> float:
    """Seconds of audio between trims: ``MGM_OMNI_HEAP_TRIM_SECONDS`` or the default (0: never)."""
    raw = os.environ.get(ENV)
    if raw is None:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV} must be a number of seconds of audio, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{ENV} must be >= 0 (0 turns heap trimming off), got {raw!r}")
    return value


class HeapTrim:
    """Counts the audio a stream makes and trims the heap once per ``every_s`` seconds of it."""

    def __init__(self, every_s: float | None = None) -> None:
        self.every_s = trim_interval() if every_s is None else every_s
        self.pending_s = 0.0
        self.trims = 0

    def made(self, seconds: float) -> None:
        """``seconds`` more audio were made; trim when the interval is reached."""
        if self.every_s <= 0:
            return
        self.pending_s += seconds
        if self.pending_s >= self.every_s:
            self.pending_s = 0.0
            self.trims += trim_heap()
