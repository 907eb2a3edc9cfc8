"""Loading safetensors checkpoints one tensor at a time, straight into the model's parameters.

``load_into(module, load_state_dict(path))`` holds the whole checkpoint in memory beside the model (and
``safetensors``' memory map keeps the file's pages resident while it is open): a 0.5B bf16 brain peaked at
twice its size. :func:`stream_into` reads the header, checks that the checkpoint fits exactly as
:func:`~mgm_omni.checkpoint.load_into` does, then reads each tensor with plain file reads, into the parameter's
own memory when the dtypes agree (else through one temporary of that tensor's size): the peak is the model plus
its largest tensor.

With ``map_embeddings`` the embedding tables are not read at all but mapped from the file (a private,
copy-on-write map): only the pages of rows that are looked up become resident. A 0.5B Qwen2.5 brain's table
is 260 MB of bf16 of which a conversation touches a few hundred rows. Rows written later (training) become
private copies; the file is never changed. It must not be rewritten in place while a model maps it (the
caches write a converted checkpoint once, under a ``.complete`` marker). A table whose dtype differs from
the file's, or whose offset is not aligned to its element size, is read as usual.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
MAX_HEADER = 100 << 20  # a safetensors header is JSON; 100 MB is far past any real one


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a safetensors file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset
    nbytes: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file (name -> :class:`TensorEntry`), from its header alone."""
    from mgm_omni.checkpoint import CheckpointError

    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} past the file's {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    base, entries = 8 + n, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(meta.get("dtype"))
        begin, end = meta.get("data_offsets", (0, -1))
        shape = tuple(int(d) for d in meta.get("shape", ()))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has a dtype this loader does not read: {meta.get('dtype')}")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize or base + end > size or begin < 0:
            raise CheckpointError(f"{path}: tensor {name} has offsets {begin}..{end} that do not fit its shape "
                                  f"{shape} or the file ({size} bytes): truncated or corrupt")
        entries[name] = TensorEntry(path, dtype, shape, base + begin, end - begin)
    return entries


def checkpoint_entries(path: str | os.PathLike) -> dict[str, TensorEntry] | None:
    """Every tensor of a safetensors checkpoint (a file, a sharded index, or a directory holding either), or
    None when ``path`` is another format (``.pt`` / ``.bin``: read those with ``load_state_dict``)."""
    from mgm_omni.checkpoint import CheckpointError, checkpoint_file, index_shards

    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        return read_header(path)
    if not path.name.endswith(".index.json"):
        return None
    weight_map = index_shards(path)
    entries = {}
    for shard in sorted(set(weight_map.values())):
        found = read_header(path.parent / shard)
        entries.update({k: v for k, v in found.items() if weight_map.get(k) == shard})
    missing = set(weight_map) - set(entries)
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} indexed tensors absent from shards, e.g. {sorted(missing)[:3]}")
    return entries


def read_tensor_into(entry: TensorEntry, target: torch.Tensor, handle) -> None:
    """Read ``entry`` into ``target`` (same shape): in place when the dtype matches, else through a temporary."""
    in_place = entry.dtype == target.dtype and target.is_contiguous() and target.device.type == "cpu"
    buffer = target.detach().view(-1).view(torch.uint8).numpy() if in_place else bytearray(entry.nbytes)
    view, done = memoryview(buffer), 0
    handle.seek(entry.start)
    while done < entry.nbytes:
        got = handle.readinto(view[done:])
        if not got:
            from mgm_omni.checkpoint import CheckpointError

            raise CheckpointError(f"{entry.file}: ended inside a tensor (truncated)")
        done += got
    if not in_place and entry.nbytes:
        target.copy_(torch.frombuffer(buffer, dtype=entry.dtype).view(entry.shape).to(target.dtype))


def mapped_tensor(entry: TensorEntry, maps: dict[Path, mmap.mmap]) -> torch.Tensor | None:
    """``entry`` as a tensor over a copy-on-write map of its file (one map per file, shared), or None when its
    offset is not aligned to its element size."""
    if entry.start % entry.dtype.itemsize:
        return None
    if entry.file not in maps:
        with open(entry.file, "rb") as f:
            maps[entry.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    count = entry.nbytes // entry.dtype.itemsize
    return torch.frombuffer(maps[entry.file], dtype=entry.dtype, count=count, offset=entry.start).view(entry.shape)


def stream_into(module: torch.nn.Module, path: str | os.PathLike, tied: Iterable[tuple[str, str]] = (),
                ignore_unexpected: Iterable[str] = (), map_embeddings: bool = False) -> None:
    """:func:`~mgm_omni.checkpoint.load_into` from a checkpoint on disk, one tensor at a time (see the module
    docstring); the same strict checks and errors. A ``.pt`` / ``.bin`` checkpoint is loaded whole.
    ``map_embeddings``: map ``nn.Embedding`` tables from the file instead of reading them (module docstring)."""
    from mgm_omni.checkpoint import check_fit, load_into, load_state_dict, retie, shares_tensor

    tied = list(tied)
    entries = checkpoint_entries(path)
    if entries is None:
        load_into(module, load_state_dict(path), tied=tied, ignore_unexpected=ignore_unexpected)
        return
    # pairs that share one tensor in the model and one entry in the file: they share one again after loading,
    # also when the source table is replaced by a map of the file (retie alone would see two tensors then)
    shared = {(t, s) for t, s in tied if t not in entries and s in entries and shares_tensor(module, t, s)}
    for target, source in tied:
        if target not in entries and source in entries:
            entries[target] = entries[source]
    expected = module.state_dict()
    check_fit(module, expected, {k: e.shape for k, e in entries.items()}, ignore_unexpected)
    tied_targets = {target for target, _ in tied}
    tables = {f"{name}.weight": sub for name, sub in module.named_modules()
              if map_embeddings and isinstance(sub, torch.nn.Embedding) and f"{name}.weight" not in tied_targets}
    handles, maps = {}, {}
    try:
        with torch.no_grad():
            for name, param in expected.items():
                entry = entries[name]
                if name in tables and entry.dtype == param.dtype and param.device.type == "cpu":
                    table = mapped_tensor(entry, maps)
                    if table is not None:
                        grad = tables[name].weight.requires_grad
                        tables[name].weight = torch.nn.Parameter(table, requires_grad=grad)
                        continue
                if entry.file not in handles:
                    handles[entry.file] = open(entry.file, "rb")  # noqa: SIM115 (closed below)
                read_tensor_into(entry, param, handles[entry.file])
    finally:
        for handle in handles.values():
            handle.close()
    for target, source in tied:
        retie(module, target, source, force=(target, source) in shared)
