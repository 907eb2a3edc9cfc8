"""What a brain (MLLM) directory declares about its LLM: the family and the tokenizer; plain LLM configs.

The official brains are Qwen2.5 (q/k/v biases) with the Qwen tokenizer in the model directory. Other LLMs
(a Llama-architecture SmolLM2, a Qwen3) declare ``llm_family`` in ``config.json`` and may keep their tokenizer in
a sub-folder named by ``brain_tokenizer``. :func:`load_llm_config` reads a Hugging Face ``config.json`` of a
text LLM (``model_type`` ``qwen2``, ``llama`` or ``qwen3``), the form our GGUF conversion writes too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mgm_omni.config.llm import LLM_FAMILIES, ConfigError, DecoderConfig, OmniConfig, read_json


@dataclass(frozen=True)
class BrainSpec:
    """A brain's LLM family (a key of :data:`~mgm_omni.config.llm.LLM_FAMILIES`) and its tokenizer folder."""

    family: str
    tokenizer_dir: Path

    @classmethod
    def of(cls, root: str | os.PathLike, cfg: OmniConfig) -> BrainSpec:
        """The spec of the brain directory ``root`` whose config is ``cfg``; the tokenizer folder must exist."""
        root = Path(root)
        folder = root / cfg.brain_tokenizer if cfg.brain_tokenizer else root
        if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
            raise ConfigError(f"{folder}: the brain's tokenizer (tokenizer.json, or vocab.json + merges.txt) "
                              "is not there")
        return cls(cfg.family, folder)


def load_llm_config(path: str | os.PathLike) -> DecoderConfig:
    """A Hugging Face text-LLM ``config.json`` (or its directory) as a :class:`DecoderConfig` with its family.

    Raises:
        ConfigError: a ``model_type`` outside qwen2 / llama / qwen3, or a feature the decoder does not build
            (MLP biases, sliding-window attention, RoPE scaling).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    data = read_json(path)
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in LLM_FAMILIES:
        raise ConfigError(f"{path}: model_type {model_type!r} is not a supported LLM family "
                          f"({', '.join(sorted(LLM_FAMILIES))})")
    if data.get("mlp_bias"):
        raise ConfigError(f"{path}: MLP biases (mlp_bias) are not supported")
    if data.get("use_sliding_window") or any(t != "full_attention" for t in data.get("layer_types") or []):
        raise ConfigError(f"{path}: sliding-window attention is not supported")
    rope = data.get("rope_parameters")  # transformers >= 5 writes rope_theta here
    if isinstance(rope, dict):
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"{path}: rope type {rope.get('rope_type')!r} is not supported (plain RoPE only)")
        data = {**data, "rope_theta": data.get("rope_theta", rope.get("rope_theta", 10000.0))}
    try:
        cfg = DecoderConfig.from_dict(data)
        return cfg.replace(llm_family=model_type)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
