"""One model resolver: ``--model`` when given, otherwise the default; hub ids from the local cache.

Entry points (CLI, server, eval, demo) resolve a model name to a local directory here and pass the directory
down; the generation code never resolves names itself.

    mouth = resolve_mouth(args.model)          # ResolvedModel(path, name, builtin)
    pipe = TTSPipeline.load(mouth.path)

A name is a local directory, ``own-small`` (the small mouth trained here and shipped in the package,
``hub/own_mouth_shipped.py``), the built-in ``tiny-random`` model (written into the cache on first use; random
weights, for tests), or a Hugging Face repo id (the local hub cache first; see ``checkpoint.resolve_pretrained``).
Without ``--model`` the mouth is the official checkpoint when it is in the local hub cache, else the shipped
``own-small``, else (an install without it) the tiny random model, whose audio is noise-like:
:attr:`ResolvedModel.builtin` tells the entry point to say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mgm_omni.checkpoint import resolve_pretrained
from mgm_omni.hub.cache import cache_root
from mgm_omni.hub.own_mouth_shipped import SHIPPED_MOUTH_NAME, shipped_mouth_available, shipped_mouth_dir

DEFAULT_MOUTH = "wcy1122/MGM-Omni-TTS-2B-0927"
DEFAULT_BRAIN = "wcy1122/MGM-Omni-7B"
BUILTIN = "tiny-random"
MOUTH_FILES = ["*.json", "*.safetensors", "*.txt", "cosyvoice2/*"]  # config, weights, tokenizer, mouth.json, decoder


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory, the name it was asked by, and whether it is the built-in random model."""

    path: Path
    name: str
    builtin: bool = False


def cached_on_hub(repo_id: str) -> bool:
    """Whether ``repo_id``'s weights are in the local Hugging Face cache (never touches the network)."""
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not downloaded (or no huggingface_hub)
        return False
    return (root / "model.safetensors").exists() or (root / "model.safetensors.index.json").exists()


def default_mouth() -> str:
    """The official SpeechLM if it is in the local hub cache, else the shipped own mouth, else the tiny model."""
    if cached_on_hub(DEFAULT_MOUTH):
        return DEFAULT_MOUTH
    return SHIPPED_MOUTH_NAME if shipped_mouth_available() else BUILTIN


def default_brain() -> str:
    """The official MLLM if it is in the local hub cache, else the default brain when its parts are installed
    (``mgm_omni.hub.default_brain``), else the built-in tiny model."""
    if cached_on_hub(DEFAULT_BRAIN):
        return DEFAULT_BRAIN
    from mgm_omni.hub.default_brain import DEFAULT_BRAIN_NAME, default_brain_available

    return DEFAULT_BRAIN_NAME if default_brain_available() else BUILTIN


def resolve_mouth(model: str | os.PathLike | None = None, cache: Path | None = None) -> ResolvedModel:
    """The directory of a SpeechLM (with its decoder): ``model``, else :func:`default_mouth`."""
    name = str(model) if model is not None else default_mouth()
    if name == BUILTIN:
        from mgm_omni.hub.tiny_mouth import ensure_tiny_random

        return ResolvedModel(ensure_tiny_random(cache or cache_root()), name, builtin=True)
    if name == SHIPPED_MOUTH_NAME:
        return ResolvedModel(shipped_mouth_dir(), name)  # every file's sha256 checked
    return ResolvedModel(resolve_pretrained(name, allow_patterns=MOUTH_FILES), name)


def resolve_brain(model: str | os.PathLike | None = None, cache: Path | None = None) -> ResolvedModel:
    """The directory of an MLLM: ``model``, else :func:`default_brain`."""
    name = str(model) if model is not None else default_brain()
    if name == BUILTIN:
        from mgm_omni.hub.tiny_brain import ensure_tiny_omni

        return ResolvedModel(ensure_tiny_omni(cache or cache_root()), name, builtin=True)
    from mgm_omni.hub.default_brain import DEFAULT_BRAIN_NAME, default_brain_dir

    if name == DEFAULT_BRAIN_NAME:
        return ResolvedModel(default_brain_dir(cache or cache_root()), name)
    return ResolvedModel(resolve_pretrained(name), name)
