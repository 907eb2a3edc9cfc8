"""Settings of the server: limits (each refused with an OpenAI-style error), batching, storage, API key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgm_omni.hub.cache import voices_root


@dataclass
class ServingConfig:
    """What the HTTP API and the web demo accept, and how the speech engine batches.

    Args:
        max_upload_bytes: largest request body (JSON or multipart), checked while it is received -> 413.
        max_input_chars: longest text to speak in one request -> 400 ``string_above_max_length``.
        max_audio_seconds: longest audio input (transcription, chat) -> 400 ``audio_too_long``.
        max_voice_seconds: longest reference clip for a voice upload -> 400 ``audio_too_long``.
        max_queue: requests waiting for the engine beyond the running batch -> 429 ``queue_full``.
        max_batch: requests decoded together in one SpeechLM batch (B).
        batch_window_s: how long the engine waits for more requests before starting a batch.
        max_rows: SpeechLM rows per request (160 ms each at k=4): bounds the length of one reply.
        max_chat_tokens: most text tokens one chat reply may ask for (``max_tokens``) -> 400 above it.
        mllm_concurrency: chat and transcription requests the MLLM serves at the same time; more wait their
            turn (one long chat never holds the others behind it).
        voices_dir: where uploaded voices are stored (survives restarts); default ``voices/`` in the cache root
            (``$MGM_OMNI_CACHE``, else ``~/.cache/mgm-omni``), read when the config is made.
        api_key: if set, every route but ``/health`` needs ``Authorization: Bearer <api_key>``.
        model_name / mllm_name: ids reported by ``/v1/models``.
        seed: seed of the speech sampling and of the vocoder noise of each request.
    """

    max_upload_bytes: int = 25 * 1024 * 1024
    max_input_chars: int = 4096
    max_audio_seconds: float = 600.0
    max_voice_seconds: float = 30.0
    max_queue: int = 64
    max_batch: int = 8
    batch_window_s: float = 0.02
    max_rows: int = 8192
    max_chat_tokens: int = 4096
    mllm_concurrency: int = 4
    voices_dir: Path | None = None
    api_key: str | None = None
    model_name: str = "mgm-omni-tts"
    mllm_name: str = "mgm-omni"
    seed: int = 0

    def __post_init__(self) -> None:
        self.voices_dir = Path(self.voices_dir).expanduser() if self.voices_dir is not None else voices_root()
        for name in ("max_upload_bytes", "max_input_chars", "max_queue", "max_batch", "max_rows", "max_chat_tokens",
                     "mllm_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingConfig.{name} must be a positive int, got {value!r}")
        for name in ("max_audio_seconds", "max_voice_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServingConfig.{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.batch_window_s <= 5:
            raise ValueError(f"ServingConfig.batch_window_s must be in [0, 5] s, got {self.batch_window_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("ServingConfig.api_key must be non-empty when given")
