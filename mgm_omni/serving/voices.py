"""The voice registry moved to :mod:`mgm_omni.engine.voices` (the CLI, the server, the demo and eval share it);
these names stay importable from here for the serving code."""

from mgm_omni.engine.voices import (  # noqa: F401
    MAX_TRANSCRIPT_CHARS,
    PRESET_DIR,
    FrontendUnavailable,
    Voice,
    VoiceAudioError,
    VoiceError,
    VoiceExists,
    VoiceNameError,
    VoiceNotFound,
    VoiceReadOnly,
    VoiceRegistry,
    bundled_presets,
    check_name,
    registry_for,
)
