"""Typed dataclass configs that round-trip with each checkpoint's config files."""

from mgm_omni.config.llm import (
    ConfigError,
    DecoderConfig,
    JsonConfig,
    OmniConfig,
    SpeechLMConfig,
    _require,
    load_config,
    parse_adapter_string,
    read_json,
)

__all__ = [
    "ConfigError", "DecoderConfig", "JsonConfig", "OmniConfig", "SpeechLMConfig", "_require", "load_config",
    "parse_adapter_string", "read_json",
]
