"""Memory of long runs: heap trimming (generation/heap.py) paced by the audio made, overridable, clear when malformed,
on glibc really handing freed pages back; the CLI's bound on oneDNN's primitive cache; a flat bf16 decode attention."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from mgm_omni.generation.heap import ENV, HeapTrim, trim_interval

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_trims_once_per_interval_of_audio(monkeypatch):
    calls = []
    monkeypatch.setattr("mgm_omni.generation.heap.trim_heap", lambda: calls.append(1) or True)
    heap = HeapTrim(every_s=10.0)
    for _ in range(25):
        heap.made(1.0)
    assert heap.trims == len(calls) == 2
    off = HeapTrim(every_s=0.0)
    off.made(100.0)
    assert off.trims == 0 and len(calls) == 2


def test_interval_override_and_clear_errors(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert trim_interval() == 10.0
    monkeypatch.setenv(ENV, "0")
    assert HeapTrim().every_s == 0.0
    monkeypatch.setenv(ENV, "often")
    with pytest.raises(ValueError, match=f"{ENV} must be a number of seconds of audio, got 'often'"):
        HeapTrim()
    monkeypatch.setenv(ENV, "-1")
    with pytest.raises(ValueError, match="0 turns heap trimming off"):
        trim_interval()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
def test_trim_hands_freed_pages_back():
    """A child frees 400 blocks of 1 MB lying under a live block (which pins the heap's top): glibc keeps
    their pages; after :func:`trim_heap` RSS falls back."""
    script = """
import ctypes
from mgm_omni.generation.heap import trim_heap
libc = ctypes.CDLL("libc.so.6"); libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
warm = libc.malloc(16 << 20); libc.free(warm)  # raises glibc's dynamic mmap threshold to 16 MB
blocks = [libc.malloc(1 << 20) for _ in range(400)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
pin = libc.malloc(1 << 20)  # from the top of the heap, above the blocks
before = rss()
for b in blocks:
    libc.free(b)
kept = before - rss()
assert trim_heap()
print(kept, before - rss())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    freed_by_free, freed_by_trim = map(int, out.stdout.split())
    assert freed_by_free < 100 and freed_by_trim > 300, (freed_by_free, freed_by_trim)


def test_cli_bounds_onednn_primitive_cache_unless_the_user_chose(monkeypatch):
    from mgm_omni.cli import main

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    main(["voices", "list"])
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    main(["voices", "list"])
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/statm")
def test_bf16_decode_attention_stays_flat_in_the_number_of_key_lengths():
    """The decode step's attention meets a new key length every token: in bf16 it must not keep a kernel per
    length (it grew ~0.5 MB per length before it ran in float32). A child attends over 400 lengths."""
    script = """
import torch
from mgm_omni.models.layers import one_query_attention
torch.set_num_threads(1)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
q = torch.randn(1, 14, 1, 64).bfloat16()
k, v = torch.randn(1, 2, 1000, 64).bfloat16(), torch.randn(1, 2, 1000, 64).bfloat16()
for s in range(100, 150):
    one_query_attention(q, k[:, :, :s], v[:, :, :s], None)
before = rss()
for s in range(150, 550):
    out = one_query_attention(q, k[:, :, :s], v[:, :, :s], None)
print(before, rss(), out.dtype)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    before, after, dtype = run.stdout.split()
    assert dtype == "torch.bfloat16" and int(after) - int(before) < 25, (before, after)
