"""Typed dataclass configs that round-trip with each checkpoint's config files."""

from mgm_omni.config.json_config import ConfigError, JsonConfig, _require, read_json
from mgm_omni.config.llm import (
    DecoderConfig,
    OmniConfig,
    SpeechLMConfig,
    load_config,
    parse_adapter_string,
)

__all__ = [
    "ConfigError", "DecoderConfig", "JsonConfig", "OmniConfig", "SpeechLMConfig", "_require", "load_config",
    "parse_adapter_string", "read_json",
]
