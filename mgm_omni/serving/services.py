"""Everything the HTTP API and the web demo call: speech engine, voice registry, MLLM backend, metrics.

``Services.load`` builds them from model names; tests and benchmarks build them the same way with the
built-in tiny model. The front-ends (HTTP, Gradio) only translate input and output around these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mgm_omni.hub.tiny_mouth import TINY_NAME
from mgm_omni.generation.pipeline import TTSPipeline, builtin_reference, default_speechlm
from mgm_omni.generation.speech.prompt import SpeechPromptError
from mgm_omni.generation.wave.assets import find_cosyvoice_dir
from mgm_omni.engine.mllm_backend import load_understanding
from mgm_omni.engine.understanding import UnderstandingBackend
from mgm_omni.serving.config import ServingConfig
from mgm_omni.engine.speech_engine import QueueFull, SpeechEngine
from mgm_omni.serving.errors import invalid, queue_full
from mgm_omni.engine.jobs import SpeechJob
from mgm_omni.serving.metrics import ServerMetrics
from mgm_omni.serving.voice_frontends import OfficialFrontend, TinyFallbackFrontend
from mgm_omni.serving.voices import PRESET_DIR, Voice, VoiceRegistry, bundled_presets

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
        model = model or default_speechlm()
        tiny = model == TINY_NAME
        if tiny:
            log.warning("serving the built-in tiny RANDOM model: its audio is noise-like, not speech")
            pipe = TTSPipeline.load(model, temperature=temperature, max_rows=config.max_rows, seed=config.seed,
                                    device=device, dtype=dtype)
        else:
            preset = PRESET_DIR / "slt.flac"
            pipe = TTSPipeline.load(model, ref_audio=preset, ref_text=_preset_text("slt"), temperature=temperature,
                                    max_rows=config.max_rows, seed=config.seed, device=device, dtype=dtype)
        voices = voice_registry(model, config.voices_dir)
        engine = SpeechEngine(pipe.generator, pipe.token2wav, max_batch=config.max_batch, max_queue=config.max_queue,
                              batch_window_s=config.batch_window_s)
        metrics = ServerMetrics(lambda: engine.queued, lambda: len(engine.running))
        backend = load_understanding(mllm, device=device, dtype=dtype)
        return cls(config, engine, voices, backend, metrics, str(model), tiny)

    def speak(self, text: str, voice: Voice, loop=None) -> SpeechJob:
        """Queue ``text`` in ``voice``; raises APIError for text over the limit, bad text or a full queue."""
        if len(text) > self.config.max_input_chars:
            raise invalid(f"input has {len(text)} characters; the limit is {self.config.max_input_chars}",
                          param="input", code="string_above_max_length")
        try:
            job = self.engine.make_job(text, voice.text, voice.prompt, seed=self.config.seed, loop=loop)
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


def voice_registry(model: str, voices_dir) -> VoiceRegistry:
    """The voice registry of a SpeechLM: presets plus stored uploads, with the model's front-end.

    The built-in tiny model uses the documented stand-in front-end; a real model its official ONNX ones.
    """
    if model == TINY_NAME:
        frontend = TinyFallbackFrontend()
        ref, text = builtin_reference()
        presets = bundled_presets(frontend, default=lambda: Voice(
            "default", text, ref, preset=True, description="the built-in tiny model's reference"))
    else:
        frontend = OfficialFrontend(find_cosyvoice_dir(_model_root(model)))
        presets = bundled_presets(frontend)
    return VoiceRegistry(voices_dir, frontend, presets)


def _preset_text(name: str) -> str:
    import json

    return json.loads((PRESET_DIR / "presets.json").read_text())[name]["text"]


def _model_root(model: str):
    from mgm_omni.checkpoint import resolve_pretrained

    return resolve_pretrained(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "cosyvoice2/*"])
