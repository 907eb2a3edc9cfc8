"""Flow-matching items: per clip its speech units, the vocoder's log-mel and a speaker embedding.

``write_flow_items`` reads corpus manifests (audio paths relative to the manifest), their unit shards (the
speech-tokenizer recipe) and writes shards with ``units`` (L,) int32, ``mel`` (F, n_mels) float32 at the
vocoder's rate (HiFi-GAN V1: 22.05 kHz, hop 256, so 441/128 frames per 25 Hz unit, not a whole number)
and ``xvector`` (D,) float32 from a speaker encoder (``resemblyzer``: 256-d). The mel keeps the clip's own
frame count; the flow spreads the units over exactly those frames (length regulation by interpolation).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mgm_omni.audio import HIFIGAN_22K, MelConfig, load_audio, log_mel
from mgm_omni.models.speaker import get_speaker_encoder
from mgm_omni.training.loader import PadCollate
from mgm_omni.training.shards import ShardWriter
from mgm_omni.training.speechlm_rows import read_jsonl
from mgm_omni.training.unit_shards import read_units

MEL_PRESETS = {"hifigan-22k": HIFIGAN_22K}


def mel_preset(name: str) -> MelConfig:
    if name not in MEL_PRESETS:
        raise ValueError(f"unknown mel {name!r}; known: {sorted(MEL_PRESETS)}")
    return MEL_PRESETS[name]


def write_flow_items(out_dir: str | os.PathLike, manifests: Sequence[str], units_dirs: Sequence[str],
                     splits: Sequence[str], mel: MelConfig = HIFIGAN_22K, speaker_encoder="resemblyzer",
                     unit_rate: float = 25.0, max_ratio_error: float = 0.1) -> Counter:
    """Write the shards; an item whose unit count and mel length disagree by more than ``max_ratio_error``
    (relative) is skipped (units from another clip or rate). Returns counts by outcome.

    ``speaker_encoder``: a name for ``models.speaker.get_speaker_encoder``, or an object with ``embed(wave16k)``.
    """
    encoder = get_speaker_encoder(speaker_encoder) if isinstance(speaker_encoder, str) else speaker_encoder
    frames_per_unit = mel.sample_rate / mel.hop_length / unit_rate
    counts: Counter = Counter()
    with ShardWriter(out_dir, length_field="mel") as writer:
        for manifest, units_dir in zip(manifests, units_dirs):
            units = read_units(units_dir)
            for row in read_jsonl(manifest):
                if row.get("split", "train") not in splits:
                    continue
                if row["id"] not in units:
                    counts["skipped: no units"] += 1
                    continue
                path = Path(manifest).parent / row["audio"]
                wave, _ = load_audio(path, sample_rate=mel.sample_rate, max_seconds=None)
                spec = log_mel(wave, mel).T.contiguous()  # (F, n_mels)
                u = units[row["id"]]
                if abs(spec.shape[0] / max(1, len(u)) / frames_per_unit - 1) > max_ratio_error:
                    counts["skipped: units and mel lengths disagree"] += 1
                    continue
                wave16, _ = load_audio(path, sample_rate=16000, max_seconds=None)
                xvec = encoder.embed(wave16)
                writer.add({"units": u.astype(np.int32), "mel": spec.numpy().astype(np.float32),
                            "xvector": xvec.numpy().astype(np.float32)})
                counts["written"] += 1
    return counts


class FlowCollate:
    """Right-pads ``units`` and ``mel``; stacks ``xvector`` (B, D); keeps the lengths."""

    def __init__(self) -> None:
        self.pad = PadCollate()

    def __call__(self, items):
        batch = self.pad(items)
        batch["units"] = batch["units"].long()
        batch["xvector"] = torch.stack([item["xvector"] for item in items])
        del batch["xvector_lengths"]
        return batch
