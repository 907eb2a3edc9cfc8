"""The CTranslate2 Whisper reader, now in :mod:`mgm_omni.checkpoint.whisper_ct2` (re-exported here unchanged)."""

from mgm_omni.checkpoint.whisper_ct2 import (  # noqa: F401
    WHISPER_BASE_SHA256,
    WHISPER_TINY_EN_SHA256,
    AssetMissingError,
    Ct2FormatError,
    Ct2Model,
    check_sha256,
    ct2_whisper_config,
    ct2_whisper_to_hf,
    default_cache_dir,
    read_ct2_model,
    whisper_base_ct2_dir,
    whisper_base_parts,
    whisper_tiny_en_dir,
)
