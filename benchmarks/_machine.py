"""The machine a benchmark ran on, in one line: the CPU's model name, its cores and its vector instruction sets.

Every speed number is printed beside this line (``from _machine import describe_cpu``: the benchmarks run as
scripts, so their own folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that change which CPU kernels run here (bf16 / int8 matmuls, the native decode step).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def _cpuinfo() -> tuple[str | None, set[str]]:
    """Model name and flags of the first processor in ``/proc/cpuinfo`` (None and empty elsewhere)."""
    name, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where there is one, e.g. in a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe_cpu() -> str:
    """E.g. ``AMD EPYC 7B13, 2 cores; avx2 yes, avx512f no, avx512_bf16 no, avx512_vnni no, amx_tile no, ...``."""
    name, flags = _cpuinfo()
    name = name or platform.processor() or "unknown CPU"
    shown = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)
    return f"{name}, {cpu_cores()} cores; {shown}"


if __name__ == "__main__":
    print(describe_cpu())
