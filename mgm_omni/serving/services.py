"""Everything the HTTP API and the web demo call: speech engine, voice registry, MLLM backend, metrics.

``Services.load`` builds them from model names (resolved once, by ``mgm_omni.hub``); tests and benchmarks
build them the same way with the built-in tiny model. The front-ends (HTTP, Gradio) only translate input and
output around these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mgm_omni.engine.jobs import SpeechJob
from mgm_omni.engine.mllm_backend import load_understanding
from mgm_omni.engine.speech_engine import QueueFull, SpeechEngine
from mgm_omni.engine.understanding import UnderstandingBackend
from mgm_omni.engine.voices import Voice, VoiceRegistry, registry_for
from mgm_omni.generation.pipeline import load_mouth
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.speech.prompt import SpeechPromptError
from mgm_omni.hub import resolve_mouth, voices_root
from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.errors import invalid, queue_full
from mgm_omni.serving.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The server's state: one of each, shared by all requests."""

    config: ServingConfig
    engine: SpeechEngine
    voices: VoiceRegistry
    backend: UnderstandingBackend | None
    metrics: ServerMetrics
    model_id: str
    tiny: bool

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    @classmethod
    def load(cls, config: ServingConfig, model: str | None = None, mllm: str | None = None, device: str = "cpu",
             dtype: str | None = None, temperature: float = 0.3) -> Services:
        """Load the SpeechLM + token2wav (``model``; default: the official one if downloaded, else the
        built-in tiny model), the voice registry and, if ``mllm`` is given, the understanding backend."""
        mouth = resolve_mouth(model)
        if mouth.builtin:
            log.warning("serving the built-in tiny RANDOM model: its audio is noise-like, not speech")
        decode = DecodeConfig(SamplingConfig(temperature=temperature), max_new_rows=config.max_rows, seed=config.seed)
        generator, token2wav = load_mouth(mouth.path, decode, dtype, device)
        voices = registry_for(mouth.path, config.voices_dir, generator.mouth)
        engine = SpeechEngine(generator, token2wav, max_batch=config.max_batch, max_queue=config.max_queue,
                              batch_window_s=config.batch_window_s)
        metrics = ServerMetrics(lambda: engine.queued, lambda: len(engine.running))
        backend = load_understanding(mllm, device=device, dtype=dtype)
        return cls(config, engine, voices, backend, metrics, mouth.name, mouth.builtin)

    def speak(self, text: str, voice: Voice, loop=None) -> SpeechJob:
        """Queue ``text`` in ``voice``; raises APIError for text over the limit, bad text or a full queue."""
        if len(text) > self.config.max_input_chars:
            raise invalid(f"input has {len(text)} characters; the limit is {self.config.max_input_chars}",
                          param="input", code="string_above_max_length")
        try:
            job = self.engine.make_job(text, voice, seed=self.config.seed, loop=loop)
        except SpeechPromptError as exc:
            raise invalid(f"input: {exc}", param="input", code="invalid_input") from None
        try:
            return self.engine.submit(job)
        except QueueFull:
            raise queue_full(self.config.max_queue) from None

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        """Blocking: all the audio of ``text`` (used by the web demo's non-streaming paths and tests)."""
        return self.speak(text, voice).audio()

    def close(self) -> None:
        self.engine.stop()


def voice_registry(model: str | None, voices_dir=None) -> VoiceRegistry:
    """The voice registry of a SpeechLM (a directory, hub id or ``tiny-random``; default as ``tts``) in
    ``voices_dir`` (default: ``$MGM_OMNI_CACHE/voices``): presets plus stored uploads, with the model's
    own reference front-end."""
    return registry_for(resolve_mouth(model).path, voices_dir or voices_root())
