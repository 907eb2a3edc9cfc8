"""What a mouth is: its text front-end, speech codes, row layout, token-to-wave stack and reference front-end.

A mouth directory (a SpeechLM with its speech decoder) describes itself. ``mouth.json`` in the directory
declares what differs from the official MGM-Omni-TTS defaults; the official checkpoints have no such file,
and their values come from ``config.json`` (slots k, codebook size, delay rows) and
``cosyvoice2/cosyvoice2.yaml`` (sample rate, token rate, streaming grid, x-vector width) as the release
defines them (spec §1.2, §2.5, §3.1). Nothing outside this file writes those numbers down: the decoder,
the token stream, the vocoder stack and the reference front-end read them from a :class:`MouthSpec`.

    spec = MouthSpec.from_dir("path/to/MGM-Omni-TTS-2B-0927")
    spec.sample_rate, spec.slots, spec.delay_rows, spec.silence_code      # 24000, 4, 4, 6486
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgm_omni.config.cosyvoice import CosyVoice2Config
from mgm_omni.config.llm import ConfigError, SpeechLMConfig, _require

MOUTH_FILE = "mouth.json"

# Spec Appendix A: the S3 codes that sound like silence (113 values, verbatim).
S3_BLANK_CODES = frozenset((
    1707, 1788, 1950, 1951, 1959, 2031, 2040, 2112, 3894, 3903, 3975, 4056, 4137, 4138, 4143, 4146, 4164, 4173,
    4218, 4219, 4227, 4299, 4300, 5520, 5523, 5547, 5760, 5763, 5766, 5790, 6009, 6081, 6082, 6087, 6090, 6091,
    6092, 6117, 6162, 6163, 6165, 6168, 6171, 6172, 6198, 6243, 6244, 6249, 6252, 6253, 6261, 6276, 6279, 6296,
    6299, 6321, 6324, 6325, 6330, 6331, 6333, 6334, 6335, 6339, 6342, 6351, 6357, 6360, 6361, 6378, 6387, 6399,
    6402, 6405, 6406, 6408, 6411, 6412, 6413, 6414, 6415, 6416, 6432, 6433, 6435, 6436, 6438, 6439, 6441, 6459,
    6460, 6461, 6466, 6468, 6469, 6480, 6483, 6486, 6487, 6489, 6492, 6493, 6495, 6496, 6511, 6513, 6514, 6519,
    6522, 6523, 6540, 6541, 6549,
))
S3_CODES = 6561  # the S3 tokenizer v2 codebook: ids 0..6560; per slot eos = 6561, pad = 6562
S3_SILENCE_CODE = 6486  # a blank code; replaces eos / pad inside kept rows before vocoding (spec §2.5)

TEXT_FRONTENDS = ("qwen-bpe", "own-bpe")
TOKEN2WAV_KINDS = {"cosyvoice2": "hift", "flow-hifigan": "hifigan"}  # stack -> its vocoder
SPEECH_TOKENIZERS = ("s3-v2", "tiny-hash", "whisper-units")
SPEAKER_ENCODERS = ("campplus", "tiny-dvector", "ge2e")


@dataclass(frozen=True)
class MouthSpec:
    """Everything the generation code needs to know about one mouth (defaults: the official release).

    Args:
        text_frontend: ``"qwen-bpe"`` (the Qwen BPE of the official checkpoints) or ``"own-bpe"`` (the
            model's own tokenizer, optionally after ``g2p``).
        tokenizer_dir: folder of the tokenizer files, relative to the model directory.
        g2p: grapheme-to-phoneme step run before an own tokenizer (a front-end name), or None.
        speech_codes: codebook size C; per slot, relative ids C and C + 1 are eos and pad.
        silence_code: code that stands in for eos / pad inside kept rows (must sound silent).
        blank_codes: silence-like codes; a row of mostly blank codes counts toward the blank-run safeguard.
        token_rate: speech tokens per second.
        slots: k, speech tokens per row (``speech_token_count``).
        delay_rows: P, the all-pad rows the model was trained to start every chunk with.
        token2wav: the token-to-wave stack, ``"cosyvoice2"`` (flow + HiFT) or ``"flow-hifigan"``
            (flow + HiFi-GAN V1); its files are in ``token2wav_dir``; ``vocoder`` follows from it.
        speech_tokenizer / speaker_encoder: the reference front-end (``"s3-v2"`` + ``"campplus"``: the
            release's ONNX files; ``"tiny-hash"`` + ``"tiny-dvector"``: the built-in tiny model's stand-in;
            ``"whisper-units"`` + ``"ge2e"``: our own mouths' unit tokenizer and GE2E x-vector).
        reference_rate: sample rate the reference front-end reads.
        xvector_dim: width of the speaker embedding the flow takes.
        sample_rate: rate of the output audio.
        stream_grid: the flow's streaming chunk in tokens; streaming hop boundaries stay on it.
        first_hop: tokens of the first streaming hop at least (extended to the grid); 25 for the release.
        default_voice: folder (relative) of a voice that ships with the model, or None.
        dtype: dtype the SpeechLM computes in unless the caller asks for another.
    """

    text_frontend: str = "qwen-bpe"
    tokenizer_dir: str = "."
    g2p: str | None = None
    speech_codes: int = S3_CODES
    silence_code: int = S3_SILENCE_CODE
    blank_codes: frozenset[int] = S3_BLANK_CODES
    token_rate: float = 25.0
    slots: int = 4
    delay_rows: int = 4
    token2wav: str = "cosyvoice2"
    token2wav_dir: str = "cosyvoice2"
    speech_tokenizer: str = "s3-v2"
    speaker_encoder: str = "campplus"
    reference_rate: int = 16000
    xvector_dim: int = 192
    sample_rate: int = 24000
    stream_grid: int = 25
    first_hop: int = 25
    default_voice: str | None = None
    dtype: str = "bfloat16"
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # what mouth.json said

    def __post_init__(self) -> None:
        object.__setattr__(self, "blank_codes", frozenset(int(c) for c in self.blank_codes))
        _require(self.text_frontend in TEXT_FRONTENDS,
                 f"text_frontend must be one of {TEXT_FRONTENDS}, got {self.text_frontend!r}")
        _require(self.g2p is None or self.text_frontend == "own-bpe", "g2p needs text_frontend 'own-bpe'")
        _require(self.speech_codes >= 2, f"speech_codes must be >= 2, got {self.speech_codes}")
        _require(self.speech_codes == S3_CODES or self.blank_codes != S3_BLANK_CODES,
                 f"blank_codes and silence_code default to the S3 ones; a {self.speech_codes}-code book must "
                 "declare its own")
        _require(0 <= self.silence_code < self.speech_codes,
                 f"silence_code {self.silence_code} is not a code of the {self.speech_codes}-code book")
        _require(all(0 <= c < self.speech_codes for c in self.blank_codes),
                 f"blank_codes must be codes of the {self.speech_codes}-code book")
        _require(self.token_rate > 0, f"token_rate must be > 0, got {self.token_rate}")
        _require(self.slots >= 1 and self.delay_rows >= 0, "slots must be >= 1 and delay_rows >= 0")
        _require(self.token2wav in TOKEN2WAV_KINDS,
                 f"token2wav must be one of {sorted(TOKEN2WAV_KINDS)}, got {self.token2wav!r}")
        _require(self.speech_tokenizer in SPEECH_TOKENIZERS,
                 f"speech_tokenizer must be one of {SPEECH_TOKENIZERS}, got {self.speech_tokenizer!r}")
        _require(self.speaker_encoder in SPEAKER_ENCODERS,
                 f"speaker_encoder must be one of {SPEAKER_ENCODERS}, got {self.speaker_encoder!r}")
        for name in ("reference_rate", "xvector_dim", "sample_rate", "stream_grid", "first_hop"):
            _require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        _require(self.dtype in ("float32", "bfloat16", "float16"), f"dtype must name a float dtype, got {self.dtype!r}")

    # ------------------------------------------------------------------------------------------ derived

    @property
    def speech_eos(self) -> int:
        """Relative id of the per-slot eos."""
        return self.speech_codes

    @property
    def speech_pad(self) -> int:
        """Relative id of the per-slot pad."""
        return self.speech_codes + 1

    @property
    def vocoder(self) -> str:
        return TOKEN2WAV_KINDS[self.token2wav]

    @property
    def row_seconds(self) -> float:
        """Audio time of one row of k tokens (160 ms for the release)."""
        return self.slots / self.token_rate

    @property
    def samples_per_token(self) -> float:
        return self.sample_rate / self.token_rate

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "source"]

    @classmethod
    def defaults_for(cls, cfg: SpeechLMConfig, decoder: CosyVoice2Config | None = None) -> dict[str, Any]:
        """The values an official checkpoint implies: its ``config.json`` and its ``cosyvoice2.yaml``."""
        values: dict[str, Any] = {"speech_codes": cfg.speech_eos, "slots": cfg.speech_token_count,
                                  "delay_rows": cfg.delay_rows}
        if decoder is not None:
            values.update(sample_rate=decoder.sample_rate, token_rate=float(decoder.token_frame_rate),
                          stream_grid=decoder.chunk_size, xvector_dim=decoder.spk_embed_dim)
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: dict[str, Any] | None = None) -> MouthSpec:
        """``base`` values (see :meth:`defaults_for`) overridden by ``data`` (a parsed ``mouth.json``).

        Unknown keys are errors (a typo must not fall back to an official default silently).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{MOUTH_FILE}: expected a JSON object, got {type(data).__name__}")
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], names, n=1)
            raise ConfigError(f"{MOUTH_FILE}: unknown key {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        values = {**(base or {}), **data}
        if "blank_codes" in data:
            _require(isinstance(data["blank_codes"], list), f"{MOUTH_FILE}: blank_codes must be a list of codes")
        try:
            return cls(**values, source=dict(data))
        except TypeError as exc:
            raise ConfigError(f"{MOUTH_FILE}: {exc}") from None

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, token2wav_dir: str | os.PathLike | None = None) -> MouthSpec:
        """The spec of a mouth directory: its defaults from ``config.json`` (+ the decoder yaml, when present)
        overridden by ``mouth.json``; values that both files give must agree."""
        root = Path(model_dir)
        cfg = SpeechLMConfig.from_json_file(root / "config.json")
        data = json.loads((root / MOUTH_FILE).read_text(encoding="utf-8")) if (root / MOUTH_FILE).is_file() else {}
        default_dir = cls.__dataclass_fields__["token2wav_dir"].default
        folder = Path(token2wav_dir) if token2wav_dir else root / data.get("token2wav_dir", default_dir)
        yaml_path = folder / "cosyvoice2.yaml"
        decoder = CosyVoice2Config.from_yaml(yaml_path) if yaml_path.is_file() else None
        base = cls.defaults_for(cfg, decoder)
        clash = [k for k in ("speech_codes", "slots") if k in data and data[k] != base[k]]
        if cfg.speech_token_pre_pad is not None and data.get("delay_rows", cfg.delay_rows) != cfg.delay_rows:
            clash.append("delay_rows")
        if clash:
            raise ConfigError(f"{root / MOUTH_FILE}: {', '.join(clash)} disagree(s) with config.json "
                              f"({', '.join(f'{k}={base[k]}' for k in clash)})")
        spec = cls.from_dict(data, base)
        if decoder is not None:
            _check_decoder(spec, decoder, yaml_path)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The ``mouth.json`` form of every field (sorted blank codes)."""
        out = {n: getattr(self, n) for n in self.field_names()}
        out["blank_codes"] = sorted(self.blank_codes)
        return out

    def save(self, path: str | os.PathLike, keys: list[str] | None = None) -> None:
        """Write ``mouth.json`` with ``keys`` only (default: every field)."""
        data = self.to_dict()
        if keys is not None:
            data = {k: data[k] for k in keys}
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _check_decoder(spec: MouthSpec, decoder: CosyVoice2Config, path: Path) -> None:
    flow_vocab = decoder.flow.get("vocab_size") if isinstance(decoder.flow, dict) else None
    _require(flow_vocab in (None, spec.speech_codes),
             f"{path}: the flow reads {flow_vocab} codes but the SpeechLM writes {spec.speech_codes}")
    _require(decoder.sample_rate == spec.sample_rate,
             f"{path}: sample_rate {decoder.sample_rate} but the mouth declares {spec.sample_rate}")
