"""Checkpoint I/O: the only package that touches safetensors, ``.pt`` and GGUF files and the model hub.

Parameter names are kept exactly as upstream (Hugging Face / CosyVoice) writes them, so loading an
official checkpoint is ``load_state_dict`` plus, where needed, a small tested name map. GGUF files
(llama.cpp) are read and converted to that form by :mod:`mgm_omni.checkpoint.gguf`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: itself, or a directory's ``model.safetensors.index.json`` /
    ``model.safetensors``.

    Raises:
        CheckpointError: no such file, or a directory without either.
    """
    path = Path(path)
    if path.is_dir():
        for name in (SAFETENSORS_INDEX, SAFETENSORS_SINGLE):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no {SAFETENSORS_INDEX} or {SAFETENSORS_SINGLE} in this directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path


def index_shards(index_path: Path) -> dict[str, str]:
    """The weight map (tensor -> shard file name) of a sharded safetensors index, every shard checked present."""
    weight_map: Mapping[str, str] = json.loads(index_path.read_text()).get("weight_map", {})
    if not weight_map:
        raise CheckpointError(f"{index_path}: index has no weight_map")
    for shard in sorted(set(weight_map.values())):
        if not (index_path.parent / shard).is_file():
            raise CheckpointError(f"{index_path}: shard {shard} is missing")
    return dict(weight_map)


def load_state_dict(path: str | os.PathLike, strip_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from a file or a checkpoint directory.

    Accepts ``*.safetensors``, a sharded safetensors index (``*.index.json``), PyTorch ``.pt``/``.pth``/
    ``.bin`` state dicts (read with ``weights_only=True``), or a directory holding one of
    ``model.safetensors.index.json`` / ``model.safetensors``. A ``.pt`` file that wraps its state dict
    (``{"state_dict": ...}``, ``{"generator": ...}``, ``{"model": ...}``) is unwrapped.

    Args:
        path: file or directory.
        strip_prefix: if given, this prefix is removed from every key that starts with it.
    """
    path = checkpoint_file(path)
    try:
        if path.name.endswith(".index.json"):
            state = _load_sharded(path)
        elif path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = _load_torch(path)
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt or truncated files surface as many exception types
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if strip_prefix:
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v for k, v in state.items()}
    return state


def _load_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    weight_map = index_shards(index_path)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(load_file(str(index_path.parent / shard)))
    missing = set(weight_map) - set(state)
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} indexed tensors absent from shards, e.g. {sorted(missing)[:3]}")
    return state


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "generator", "model", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(obj)


def save_state_dict(
    state: Mapping[str, torch.Tensor], directory: str | os.PathLike, max_shard_bytes: int | None = None
) -> Path:
    """Write ``state`` as ``model.safetensors``, or as shards plus an index when larger than ``max_shard_bytes``.

    Tensors that share storage (tied weights) are written once under their first name; the loader
    re-ties them from the config. Returns the file to pass back to :func:`load_state_dict`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _dedupe_shared(state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        out = directory / SAFETENSORS_SINGLE
        save_file(state, str(out), metadata={"format": "pt"})
        return out
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    index = directory / SAFETENSORS_INDEX
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def _dedupe_shared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen and tensor.numel() > 0:
            continue
        seen[key] = name
        out[name] = tensor.contiguous()
    return out


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    tied: Iterable[tuple[str, str]] = (),
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Copy ``state`` into ``module`` strictly, with clear errors.

    Args:
        tied: pairs ``(target, source)``: when ``target`` is absent from ``state`` it is taken from
            ``source`` (tied embeddings: ``("lm_head.weight", "model.embed_tokens.weight")``).
        ignore_unexpected: key prefixes that may be present in ``state`` but are not parameters of
            ``module`` (for example tower weights loaded from their own repos).
    """
    state = dict(state)
    for target, source in tied:
        if target not in state and source in state:
            state[target] = state[source]
    expected = module.state_dict()
    check_fit(module, expected, {k: tuple(v.shape) for k, v in state.items()}, ignore_unexpected)
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(state[name].to(param.dtype))
    # copy_ on state_dict() tensors writes through to the parameters; re-tie after loading
    for target, source in tied:
        retie(module, target, source)


def check_fit(module: torch.nn.Module, expected: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple],
              ignore_unexpected: Iterable[str] = ()) -> None:
    """Raise a :class:`CheckpointError` naming what is missing, unexpected or mis-shaped when a checkpoint with
    tensors of ``shapes`` does not fit ``expected`` (the module's state dict) strictly."""
    ignore = tuple(ignore_unexpected)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected and not (ignore and k.startswith(ignore))]
    wrong = [
        f"{k}: checkpoint {tuple(shapes[k])} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in shapes and tuple(shapes[k]) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        problems.append(f"{len(wrong)} with wrong shape (e.g. {wrong[:2]})")
    if problems:
        raise CheckpointError(f"{type(module).__name__}: checkpoint does not fit: " + "; ".join(problems))


def shares_tensor(module: torch.nn.Module, a: str, b: str) -> bool:
    """Whether the dotted names ``a`` and ``b`` are one tensor in ``module`` (False if either is missing)."""
    try:
        (mod_a, attr_a), (mod_b, attr_b) = _resolve(module, a), _resolve(module, b)
    except AttributeError:
        return False
    return getattr(mod_a, attr_a) is getattr(mod_b, attr_b)


def retie(module: torch.nn.Module, target: str, source: str, force: bool = False) -> None:
    """Point ``target`` at ``source``'s tensor if they are tied in the model (``force``: they were before a
    load replaced one of them)."""
    if not (force or shares_tensor(module, target, source)):
        return  # not tied in the model (or missing): keep both copies
    tgt_mod, tgt_attr = _resolve(module, target)
    src_mod, src_attr = _resolve(module, source)
    setattr(tgt_mod, tgt_attr, getattr(src_mod, src_attr))


def _resolve(module: torch.nn.Module, dotted: str) -> tuple[torch.nn.Module, str]:
    *path, attr = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    return module, attr


def resolve_pretrained(
    path_or_repo_id: str | os.PathLike,
    allow_patterns: Iterable[str] | None = None,
    required: Iterable[str] = ("config.json",),
    revision: str | None = None,
) -> Path:
    """A local directory for ``path_or_repo_id``: the directory itself, or a hub snapshot.

    A local directory is used as is. Otherwise the id is treated as a Hugging Face repo: the local
    cache is tried first, then a download when online. Offline, or when the hub cannot be reached,
    this raises :class:`CheckpointError` naming the repo and the files to fetch.
    """
    local = Path(path_or_repo_id).expanduser()
    required = list(required)
    if local.is_dir():
        missing = [name for name in required if not (local / name).exists()]
        if missing:
            raise CheckpointError(f"{local}: missing {', '.join(missing)}")
        return local
    repo_id = str(path_or_repo_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise CheckpointError(f"{repo_id}: no such directory, and not a hub repo id of the form 'owner/name'")
    patterns = list(allow_patterns) if allow_patterns else None
    how_to = (
        f"download it on a machine with network access, e.g. `huggingface-cli download {repo_id}"
        + (" " + " ".join(f"--include '{p}'" for p in patterns) if patterns else "")
        + f" --local-dir <dir>`, then pass <dir> instead of {repo_id}"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(f"{repo_id}: huggingface_hub is not installed; {how_to}") from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise CheckpointError(
            f"{repo_id}: not in the local cache and the hub is disabled (HF_HUB_OFFLINE); needed files: "
            f"{', '.join(patterns or required)}; {how_to}"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision))
    except Exception as exc:
        raise CheckpointError(
            f"{repo_id}: cannot download from the hub ({type(exc).__name__}); needed files: "
            f"{', '.join(patterns or required)}; {how_to}"
        ) from exc


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


from mgm_omni.checkpoint.streaming import stream_into  # noqa: E402, F401  (re-exported; uses the helpers above)
