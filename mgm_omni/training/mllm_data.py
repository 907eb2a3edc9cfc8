"""MLLM training items: the prompt ids (with the ``<speech>`` placeholder), the reply ids and the frozen audio
towers' features, computed once.

Both stages keep the audio encoders frozen (spec §5), so their outputs are features of the data, not of the
model: ``write_mllm_items`` runs the dual tower over each clip's 30 s windows (the real geometry; a tiny tower
may use shorter windows) and stores ``main`` (n_windows * T_main, d_main) and ``aux`` (n_windows * T_aux,
d_aux) next to ``prompt_ids``, ``target_ids`` (the reply and ``<|im_end|>``) and ``audio_s`` (the clip's
seconds, before window padding). A sample without audio has zero-length features. ``features.json`` records the window geometry for the projector.

Sources: ASR items from corpus manifests (``instruction`` as the user text, the transcript as the reply) and
instruction items from JSONL rows ``{"audio": path or null, "prompt": ..., "response": ...}`` (audio paths
relative to the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.audio import WHISPER_128, load_audio, whisper_features
from mgm_omni.models.audio_encoder import DualAudioTower
from mgm_omni.text import DEFAULT_SYSTEM_PROMPT, mllm_prompt, mllm_user_content, tokenize_with_placeholders
from mgm_omni.training.shards import INDEX, ShardDataset, ShardWriter
from mgm_omni.training.speechlm_rows import read_jsonl

FEATURES_FILE = "features.json"


@dataclass(frozen=True)
class MLLMItem:
    """One conversation turn to learn: audio file (or None), the user's text, the reply."""

    audio: str | None
    prompt: str
    response: str


def asr_items(manifest: str | os.PathLike, splits: Iterable[str], instruction: str) -> list[MLLMItem]:
    """Transcription items from a corpus manifest (audio paths relative to it)."""
    root = Path(manifest).parent
    return [MLLMItem(str(root / r["audio"]), instruction, r["text"]) for r in read_jsonl(manifest)
            if r.get("split", "train") in splits]


def instruction_items(path: str | os.PathLike) -> list[MLLMItem]:
    """Instruction items from JSONL rows ``{"audio", "prompt", "response"}``."""
    root = Path(path).parent
    out = []
    for i, r in enumerate(read_jsonl(path), 1):
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("response"), str) or not r["response"]:
            raise ValueError(f"{path}:{i}: needs a string 'prompt' and a non-empty 'response'")
        out.append(MLLMItem(str(root / r["audio"]) if r.get("audio") else None, r["prompt"], r["response"]))
    return out


@torch.no_grad()
def tower_features(tower: DualAudioTower, wave16k: torch.Tensor, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Main (n * T_main, d_main) and aux (n * T_aux, d_aux) features of a clip's windows."""
    seconds = tower.main_cfg.input_frames * WHISPER_128.hop_length / WHISPER_128.sample_rate
    feats = whisper_features(wave16k, window_seconds=seconds)  # (n, 128, frames)
    param = next(tower.parameters())
    main, aux = tower(feats.to(param))
    return (main.flatten(0, 1).to(dtype).numpy(), aux.flatten(0, 1).to(dtype).numpy())


def write_mllm_items(out_dir: str | os.PathLike, items: Iterable[MLLMItem], tower: DualAudioTower, tokenizer,
                     system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, feature_dtype: str = "float16") -> int:
    """Write the shards and ``features.json``; returns the number of items."""
    dtype = {"float16": torch.float16, "float32": torch.float32}[feature_dtype]
    dm, da = tower.main_cfg.d_model, tower.aux_cfg.d_model
    eos = int(tokenizer.eos_token_id)
    n = 0
    with ShardWriter(out_dir, length_field="target_ids") as writer:
        for item in items:
            prompt = mllm_prompt([("user", mllm_user_content(item.prompt, speech=item.audio is not None))],
                                 system_prompt)
            seconds = 0.0
            if item.audio is not None:
                wave, _ = load_audio(item.audio, sample_rate=16000, max_seconds=None)
                main, aux = tower_features(tower, wave, dtype)
                seconds = len(wave) / 16000
            else:  # a text-only turn
                np_dtype = np.float16 if dtype == torch.float16 else np.float32
                main, aux = np.zeros((0, dm), np_dtype), np.zeros((0, da), np_dtype)
            writer.add({"target_ids": np.asarray(tokenizer.encode(item.response) + [eos], dtype=np.int32),
                        "prompt_ids": np.asarray(tokenize_with_placeholders(prompt, tokenizer), dtype=np.int32),
                        "main": main, "aux": aux, "audio_s": np.asarray([seconds], dtype=np.float32)})
            n += 1
    geometry = {"main_frames": tower.main_cfg.output_positions, "aux_frames": tower.aux_cfg.output_positions}
    (Path(out_dir) / FEATURES_FILE).write_text(json.dumps(geometry) + "\n", encoding="utf-8")
    return n


def field_lengths(data: ShardDataset, field: str) -> np.ndarray:
    """(N,) first-axis length of ``field`` per item, from the offsets files alone."""
    parts = []
    for shard in data.index["shards"]:
        offsets = np.load(data.path / f"{shard['name']}.{field}.offsets.npy")
        parts.append(np.diff(offsets))
    return np.concatenate(parts)


def sequence_lengths(data: ShardDataset, ds_rate: int) -> np.ndarray:
    """Tokens of each spliced sample: prompt ids (the placeholder replaced) + audio tokens + reply ids."""
    geometry = json.loads((data.path / FEATURES_FILE).read_text(encoding="utf-8"))
    windows = field_lengths(data, "main") // geometry["main_frames"]
    audio = windows * (geometry["main_frames"] // ds_rate)
    return field_lengths(data, "prompt_ids") - (windows > 0) + audio + field_lengths(data, "target_ids")


def open_items(path: str | os.PathLike) -> ShardDataset:
    path = Path(path)
    if not (path / INDEX).is_file() or not (path / FEATURES_FILE).is_file():
        raise FileNotFoundError(f"{path}: no MLLM item shards ({INDEX}, {FEATURES_FILE})")
    return ShardDataset(path)


def collate_lists(items: list[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Keeps each field as a list (samples differ in every length; splicing pads them)."""
    return {k: [item[k] for item in items] for k in items[0]}
