"""Build and load the native decode-step library (``csrc/decode_step.c``) on first use.

The C source ships with the package and is compiled on the user's machine with the system C compiler
(``cc``/``gcc``, ``-O3 -march=native -fopenmp``) into the cache directory, keyed by a hash of the
sources (``decode_step.c`` and the headers it includes), the compiler flags and the CPU's feature
flags, so a shared cache never hands one CPU's build to another. No compiler, a failed build or ``MGM_OMNI_NATIVE=0`` make :func:`load_library` raise
:class:`NativeUnavailable`; callers fall back to the PyTorch step.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_step.c"
HEADERS = ("vec_dot.h", "amx_matvec.h")  # included by decode_step.c from its own folder
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]


class NativeUnavailable(RuntimeError):
    """The native decode step cannot be used here (reason in the message)."""


def cache_dir() -> Path:
    root = os.environ.get("MGM_OMNI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mgm-omni")
    return Path(root) / "native"


def _cpu_signature() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def enabled() -> bool:
    """False when the user turned the native step off (``MGM_OMNI_NATIVE=0``)."""
    return os.environ.get("MGM_OMNI_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """The compiled library (built now if the cache has no build for this source and CPU)."""
    if not enabled():
        raise NativeUnavailable("disabled by MGM_OMNI_NATIVE=0")
    if platform.system() != "Linux":
        raise NativeUnavailable(f"the native step is built for Linux only (this is {platform.system()})")
    cc = _compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler (cc/gcc/clang) on PATH; install one (e.g. apt-get install gcc)")
    source = SOURCE.read_bytes() + b"".join(
        (SOURCE.parent / h).read_bytes() for h in HEADERS if (SOURCE.parent / h).is_file())
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + _cpu_signature().encode() + cc.encode()).hexdigest()[:16]
    target = cache_dir() / f"decode_step-{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            cmd = [cc, *FLAGS, f"-I{SOURCE.parent}", str(SOURCE), "-o", str(out), "-lm"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise NativeUnavailable(f"compiling {SOURCE.name} failed: {exc}") from exc
            if done.returncode != 0:
                raise NativeUnavailable(f"compiling {SOURCE.name} failed:\n{done.stderr.strip()[-2000:]}")
            os.replace(out, target)  # atomic: concurrent builders never load a half-written file
        log.info("built the native decode step: %s", target)
    torch.ones(1).sum()  # make sure torch (and its OpenMP runtime, which the library then shares) is loaded
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        raise NativeUnavailable(f"loading {target} failed: {exc}") from exc


def available() -> bool:
    """Whether the native step can be used (builds it on first call)."""
    try:
        load_library()
    except NativeUnavailable as exc:
        log.info("native decode step unavailable: %s", exc)
        return False
    return True
