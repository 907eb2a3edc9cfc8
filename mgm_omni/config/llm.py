"""The LLM configs that round-trip with the official ``config.json`` files: the decoder (Qwen2 / Llama /
Qwen3 families), the SpeechLM (TTS-Adapter, k speech slots) and the MGM-Omni MLLM; ``load_config``
dispatches on ``model_type``. The JSON round-trip itself is :class:`~mgm_omni.config.json_config.JsonConfig`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from mgm_omni.config.json_config import ConfigError, JsonConfig, _require, read_json

# (q/k/v bias, q/k RMSNorm) of each LLM family the decoder builds. Llama checkpoints converted by llama.cpp
# also have their q/k rows permuted for interleaved RoPE; checkpoint.gguf undoes that.
LLM_FAMILIES: dict[str, tuple[bool, bool]] = {"qwen2": (True, False), "llama": (False, False), "qwen3": (False, True)}


@dataclass
class DecoderConfig(JsonConfig):
    """A decoder stack of one of the LLM families in :data:`LLM_FAMILIES` (Qwen2/2.5, Llama, Qwen3).

    ``qk_norm`` adds RMSNorm on q and k per head (Qwen3); ``attention_bias`` adds biases to q/k/v
    (Qwen2 always has them). ``llm_family`` fixes both: a flag left at its default takes the family's
    value, one set against it is an error (:func:`load_llm_config` reads the family of a Hugging Face
    config from its ``model_type``). ``mrope_section`` switches RoPE to the 3-D multimodal form.
    """

    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = None
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    hidden_act: str = "silu"
    rope_scaling: dict | None = None
    model_type: str = "qwen3"
    llm_family: str | None = None

    def __post_init__(self) -> None:
        self._apply_family()
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        _require(self.num_attention_heads % self.num_key_value_heads == 0,
                 f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                 f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim is None:
            _require(self.hidden_size % self.num_attention_heads == 0,
                     "hidden_size must be divisible by num_attention_heads when head_dim is not given")
        else:
            _require(self.head_dim > 0 and self.head_dim % 2 == 0, f"head_dim must be a positive even integer, got {self.head_dim}")
        _require(self.rope_theta > 0, f"rope_theta must be positive, got {self.rope_theta}")
        _require(0 < self.rms_norm_eps < 1, f"rms_norm_eps must be in (0, 1), got {self.rms_norm_eps}")
        _require(self.hidden_act == "silu", f"only hidden_act 'silu' is supported, got {self.hidden_act!r}")
        rope_type = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type"))
        _require(rope_type in (None, "default", "mrope"),
                 f"rope_scaling type {rope_type!r} is not supported (only plain RoPE and mrope)")
        if self.mrope_section is not None:
            _require(len(self.mrope_section) == 3 and sum(self.mrope_section) * 2 == self.dim_per_head,
                     f"mrope_section {self.mrope_section} must have 3 parts summing to head_dim/2 = {self.dim_per_head // 2}")

    def _apply_family(self) -> None:
        declared = self.llm_family
        if declared is None:
            return
        _require(declared in LLM_FAMILIES,
                 f"llm_family must be one of {sorted(LLM_FAMILIES)}, got {declared!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in zip(("attention_bias", "qk_norm"), LLM_FAMILIES[declared]):
            current = getattr(self, name)
            if current == defaults[name]:
                setattr(self, name, value)
            else:
                _require(current == value, f"{name}={current} contradicts llm_family {declared!r} "
                                           f"(which has {name}={value})")

    @property
    def family(self) -> str:
        """The LLM family: declared, or read off the flags (q/k norm: qwen3, q/k/v bias: qwen2, else llama)."""
        if self.llm_family is not None:
            return self.llm_family
        return "qwen3" if self.qk_norm else "qwen2" if self.attention_bias else "llama"

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def mrope_section(self) -> tuple[int, int, int] | None:
        rs = self.rope_scaling or {}
        section = rs.get("mrope_section")
        return tuple(section) if section else None  # type: ignore[return-value]


def parse_adapter_string(spec: str) -> dict[str, int]:
    """``"(n_layers,n_dims,n_heads[_gqa],n_inter)"`` -> layer overrides of the TTS-Adapter.

    ``n_heads`` may read ``"16_2"``: 16 query heads sharing key/value heads in groups of 2.
    """
    parts = [p.strip() for p in str(spec).strip().strip("()").split(",")]
    _require(len(parts) == 4, f"tts_adapter_config must be '(n_layers,n_dims,n_heads[_gqa],n_inter)', got {spec!r}")
    try:
        heads, _, gqa = parts[2].partition("_")
        n_heads, group = int(heads), int(gqa) if gqa else 1
        out = {"num_hidden_layers": int(parts[0]), "hidden_size": int(parts[1]),
               "num_attention_heads": n_heads, "intermediate_size": int(parts[3])}
    except ValueError as exc:
        raise ConfigError(f"tts_adapter_config {spec!r}: {exc}") from exc
    _require(group > 0 and n_heads % group == 0, f"tts_adapter_config {spec!r}: heads must divide by the GQA factor")
    out["num_key_value_heads"] = n_heads // group
    return out


@dataclass
class SpeechLMConfig(DecoderConfig):
    """``model_type: "MGMTTS"``: a Qwen3 backbone, a TTS-Adapter and the row vocabulary (spec §1)."""

    model_type: str = "MGMTTS"
    qk_norm: bool = True
    tie_word_embeddings: bool = True
    vocab_size: int = 177924
    tts_adapter_type: str | None = "qwen3"
    tts_adapter_config: str | None = "(6,1024,16_2,3072)"
    tokenizer_text_size: int = 151672
    tokenizer_speech_size: int = 6563
    speech_token_count: int = 4
    speech_token_pre_pad: int | None = None
    tokenizer_model_max_length: int | None = None
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.model_type == "MGMTTS", f"SpeechLMConfig needs model_type 'MGMTTS', got {self.model_type!r}")
        _require(self.speech_token_count >= 1, f"speech_token_count must be >= 1, got {self.speech_token_count}")
        _require(self.tokenizer_speech_size >= 3, "tokenizer_speech_size must hold codes plus eos and pad")
        expected = self.tokenizer_text_size + self.speech_token_count * self.tokenizer_speech_size
        _require(self.vocab_size == expected,
                 f"vocab_size {self.vocab_size} != tokenizer_text_size {self.tokenizer_text_size} + "
                 f"{self.speech_token_count} x tokenizer_speech_size {self.tokenizer_speech_size} = {expected}")
        if self.tts_adapter_type is not None:
            _require(self.tts_adapter_type == "qwen3", f"tts_adapter_type must be 'qwen3', got {self.tts_adapter_type!r}")
            _require(self.tts_adapter_config is not None, "tts_adapter_type is set but tts_adapter_config is missing")
            dims = parse_adapter_string(self.tts_adapter_config)
            _require(dims["hidden_size"] == self.hidden_size,
                     f"TTS-Adapter width {dims['hidden_size']} must equal hidden_size {self.hidden_size}")
        if self.speech_token_pre_pad is not None:
            _require(self.speech_token_pre_pad >= 0, "speech_token_pre_pad must be >= 0")

    @property
    def text_size(self) -> int:
        return self.tokenizer_text_size

    @property
    def speech_eos(self) -> int:
        """Relative id of the per-slot eos (6561 for the S3 codebook)."""
        return self.tokenizer_speech_size - 2

    @property
    def speech_pad(self) -> int:
        return self.tokenizer_speech_size - 1

    @property
    def delay_rows(self) -> int:
        """P: all-pad speech rows at the start of every chunk (config value, else 4; spec §2.9)."""
        return 4 if self.speech_token_pre_pad is None else self.speech_token_pre_pad

    def adapter_config(self) -> DecoderConfig:
        """The TTS-Adapter layers: the backbone config with the adapter string's overrides."""
        _require(self.tts_adapter_config is not None, "this SpeechLM has no TTS-Adapter")
        base = {n: getattr(self, n) for n in DecoderConfig.field_names()}
        base.update(parse_adapter_string(self.tts_adapter_config))  # type: ignore[arg-type]
        base["head_dim"] = self.dim_per_head  # inherited: q_proj is H -> n_heads * head_dim
        base["model_type"] = "qwen3"
        return DecoderConfig(**base)


@dataclass
class OmniConfig(DecoderConfig):
    """``model_type: "MGMOmni"``: the Qwen2.5-VL LLM plus audio and vision towers (spec §4.8).

    A brain whose LLM is not the official Qwen2.5 declares ``llm_family`` (e.g. ``"llama"``) and, when its
    tokenizer is not in the model directory itself, ``brain_tokenizer`` (a folder relative to it); see
    :class:`~mgm_omni.config.brain.BrainSpec`.
    """

    model_type: str = "MGMOmni"
    attention_bias: bool = True
    qk_norm: bool = False
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    max_position_embeddings: int = 128000
    vision_config: dict | None = None
    mm_vision_tower: str | None = None
    mm_projector_type: str | None = None
    mm_hidden_size: int | None = None
    mm_speech_tower: str | None = None
    speech_tower_aux: str | None = None
    mm_speech_projector_type: str | None = "dual_mlp"
    mm_speech_hidden_size: int = 1280
    speech_encoder_ds_rate: int = 5
    speech_encoder_hidden_size: int = 2560
    speech_norm: bool = False
    image_aspect_ratio: str | None = "qwen2vl"
    brain_tokenizer: str | None = None
    # A brain trained without the zero-padding tokens of the last 30 s window drops them at inference too
    # (spec §4.2 "behind a flag"; the official brains keep them: False).
    speech_trim_padding: bool = False
    # A brain trained on one 30 s window at a time transcribes longer audio as segments of at most this many
    # seconds, cut at pauses, one prompt each (None: the whole audio in one prompt, as the official brains).
    speech_segment_seconds: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.model_type == "MGMOmni", f"OmniConfig needs model_type 'MGMOmni', got {self.model_type!r}")
        _require(self.speech_encoder_ds_rate >= 1, "speech_encoder_ds_rate must be >= 1")
        _require(self.speech_encoder_hidden_size > self.mm_speech_hidden_size,
                 "speech_encoder_hidden_size must be main width + aux width (> mm_speech_hidden_size)")

    @property
    def aux_hidden_size(self) -> int:
        return self.speech_encoder_hidden_size - self.mm_speech_hidden_size


CONFIG_CLASSES: dict[str, type[JsonConfig]] = {"MGMTTS": SpeechLMConfig, "MGMOmni": OmniConfig}


def load_config(path: str | os.PathLike) -> JsonConfig:
    """Read a ``config.json`` (or a directory holding one) and dispatch on ``model_type``."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    data = read_json(path)
    model_type = data.get("model_type") if isinstance(data, dict) else None
    cls = CONFIG_CLASSES.get(model_type)  # type: ignore[arg-type]
    if cls is None:
        raise ConfigError(f"{path}: unsupported model_type {model_type!r} (expected one of {sorted(CONFIG_CLASSES)})")
    return cls.from_dict(data)
