"""Build the speech decoder of a SpeechLM repo from its ``cosyvoice2/`` folder.

The folder holds ``cosyvoice2.yaml`` (flow / HiFT hyper-parameters), ``flow.pt``, ``hift.pt`` and,
in released repos, ``campplus.onnx`` and ``speech_tokenizer_v2.onnx`` for reference clips.
"""

from __future__ import annotations

import os
from pathlib import Path

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict
from mgm_omni.config.cosyvoice import CosyVoice2Config, to_resolved
from mgm_omni.generation.wave.token2wav import Token2Wav
from mgm_omni.models.flow import CausalFlow
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.hift import HiFTConfig, HiFTGenerator, load_hift

COSYVOICE_DIR = "cosyvoice2"
YAML_NAME = "cosyvoice2.yaml"


def build_flow(cfg: CosyVoice2Config) -> CausalFlow:
    return CausalFlow(FlowConfig.from_dict(to_resolved(cfg.flow)))


def build_hift(cfg: CosyVoice2Config) -> HiFTGenerator:
    return HiFTGenerator(HiFTConfig.from_resolved(to_resolved(cfg.hift)))


def find_cosyvoice_dir(model_dir: str | os.PathLike, cosyvoice_path: str | os.PathLike | None = None,
                       folder: str = COSYVOICE_DIR) -> Path:
    """``cosyvoice_path`` if given, else ``<model_dir>/<folder>`` (``MouthSpec.token2wav_dir``); raise naming
    the files needed."""
    path = Path(cosyvoice_path) if cosyvoice_path else Path(model_dir) / folder
    missing = [name for name in (YAML_NAME, "flow.pt", "hift.pt") if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: missing {', '.join(missing)} (the speech decoder; released SpeechLM repos hold them in "
            f"'{COSYVOICE_DIR}/')"
        )
    return path


def load_token2wav(cosyvoice_dir: str | os.PathLike, kind: str = "cosyvoice2") -> Token2Wav:
    """Flow + HiFT of a ``cosyvoice2/`` folder, in eval mode, fp32 (as the release runs them).

    ``kind``: the mouth's ``token2wav`` stack; only ``"cosyvoice2"`` streams here so far (a flow +
    HiFi-GAN V1 stack is declared by ``MouthSpec`` and refused with this error until it does).
    """
    if kind != "cosyvoice2":
        raise CheckpointError(f"the token2wav stack {kind!r} cannot be streamed by this version (only 'cosyvoice2')")
    path = Path(cosyvoice_dir)
    cfg = CosyVoice2Config.from_yaml(path / YAML_NAME)
    flow = build_flow(cfg).eval()
    load_into(flow, load_state_dict(path / "flow.pt"))
    hift = load_hift(path / "hift.pt", HiFTConfig.from_resolved(to_resolved(cfg.hift)))
    return Token2Wav(flow, hift)
