"""Text to speech, end to end: SpeechLM rows stream into token2wav as they are decoded.

    tts = TTSPipeline.load("path/to/MGM-Omni-TTS-2B-0927", ref_audio="voice.wav", ref_text="...")
    for chunk in tts.stream("Long text ..."):    # float32 chunks at 24 kHz, first one after ~1-2 s of audio
        play(chunk)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from mgm_omni.hub.tiny_mouth import TINY_NAME, ensure_tiny_random
from mgm_omni.checkpoint import CheckpointError, resolve_pretrained
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.generator import SpeechGenerator, SpeechRequest
from mgm_omni.generation.wave.token2wav import ReferencePrompt, StreamSchedule, Token2Wav
from mgm_omni.generation.wave.assets import find_cosyvoice_dir, load_token2wav

log = logging.getLogger(__name__)

DEFAULT_SPEECHLM = "wcy1122/MGM-Omni-TTS-2B-0927"
SAMPLE_RATE = 24000
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TTSResult:
    """What one synthesis produced, with its timings (seconds)."""

    audio: np.ndarray
    sample_rate: int
    rows: int = 0
    tokens: int = 0
    tts_error: bool = False
    cause: str | None = None
    finish_reason: str | None = None
    lm_seconds: float = 0.0
    vocoder_seconds: float = 0.0
    first_packet_seconds: float | None = None
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    def summary(self) -> str:
        total = self.lm_seconds + self.vocoder_seconds
        rtf = total / self.audio_seconds if self.audio_seconds else float("nan")
        where = f" -> {self.path}" if self.path else ""
        status = f"tts_error ({self.cause})" if self.tts_error else (self.finish_reason or "ok")
        first = f", first packet {self.first_packet_seconds:.2f} s" if self.first_packet_seconds is not None else ""
        return (f"{self.audio_seconds:.2f} s of audio{where}: {self.rows} rows, {self.tokens} speech tokens, "
                f"LM {self.lm_seconds:.2f} s + vocoder {self.vocoder_seconds:.2f} s, RTF {rtf:.2f}{first}; {status}")


def builtin_reference(n_tokens: int = 100, xvector_dim: int = 192) -> tuple[ReferencePrompt, str]:
    """A fixed synthetic voice prompt (random tokens, a smooth mel, a random x-vector) for the tiny model."""
    gen = torch.Generator().manual_seed(2024)
    tokens = torch.randint(0, 6561, (1, n_tokens), generator=gen)
    mel = -6.0 + torch.randn(1, 2 * n_tokens, 80, generator=gen).cumsum(1) * 0.05  # slowly varying log-mel
    xvector = torch.randn(1, xvector_dim, generator=gen)
    return ReferencePrompt(tokens, mel, xvector), "This is the reference voice."


class TTSPipeline:
    """A :class:`SpeechGenerator` (rows), a :class:`Token2Wav` (audio) and one reference voice."""

    def __init__(self, generator: SpeechGenerator, token2wav: Token2Wav, reference: ReferencePrompt,
                 reference_text: str, schedule: StreamSchedule | None = None) -> None:
        self.generator, self.token2wav = generator, token2wav
        self.reference, self.reference_text = reference, reference_text
        self.schedule = schedule or StreamSchedule()

    @classmethod
    def load(cls, model: str | os.PathLike = TINY_NAME, ref_audio: str | os.PathLike | None = None,
             ref_text: str | None = None, cosyvoice_path: str | os.PathLike | None = None,
             dtype: str | None = None, device: str = "cpu", temperature: float = 0.3, top_k: int = 50,
             top_p: float = 1.0, max_rows: int = 8192, seed: int | None = 0,
             reference: tuple[ReferencePrompt, str] | None = None, quantize: str | None = None) -> TTSPipeline:
        """Load a SpeechLM directory (or hub id, or ``tiny-random``) with its speech decoder.

        The voice is ``reference`` (a prompt and its transcript, e.g. a registered voice), else the clip
        ``ref_audio`` with ``ref_text``, else (tiny model only) a built-in synthetic reference.
        ``quantize="int8"``: int8 weight-only SpeechLM layers (a CPU speed mode, see ``cpu_linear``).
        """
        tiny = str(model) == TINY_NAME
        root = ensure_tiny_random() if tiny else resolve_pretrained(
            model, allow_patterns=["*.json", "*.safetensors", "*.txt", "cosyvoice2/*"])
        torch_dtype = _DTYPES[dtype] if dtype else (torch.float32 if tiny else torch.bfloat16)
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        config = DecodeConfig(sampling=sampling, max_new_rows=max_rows, seed=seed)
        generator = SpeechGenerator.from_pretrained(root, dtype=torch_dtype, device=device, config=config,
                                                    quantize=quantize)
        cosy = find_cosyvoice_dir(root, cosyvoice_path)
        token2wav = load_token2wav(cosy)
        if reference is not None:
            reference, reference_text = reference
        elif ref_audio is None:
            if not tiny:
                raise CheckpointError("pass --ref-audio (a 3-30 s clip of the voice to clone) with a real model")
            reference, reference_text = builtin_reference()
        else:
            reference, reference_text = _reference_from_audio(cosy, ref_audio, ref_text)
        return cls(generator, token2wav, reference, reference_text)

    def stream(self, text: str, progress: bool = False) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 24 kHz) as the text is spoken; ``self.last`` holds the result."""
        request = SpeechRequest(text, self.reference_text, self.reference.tokens[0].tolist())
        result = TTSResult(np.zeros(0, np.float32), SAMPLE_RATE)
        self.last = result
        # The vocoder's source noise comes from the stream's own generator seeded like the decoder (torch's
        # global RNG only when the seed is None): the same text and seed give the same audio, whatever other
        # threads do with the global RNG meanwhile (a server's renderer seeds its jobs the same way).
        state = self.token2wav.start(self.reference, self.schedule, seed=self.generator.config.seed)
        start = time.perf_counter()
        vocoder = 0.0
        chunks: list[np.ndarray] = []
        bar = tqdm(desc="speaking", unit="row", disable=not progress, leave=False)
        for item in self.generator.stream(request):
            result.rows += 1
            bar.update(1)
            if item.event.abort is not None and result.cause is None:
                result.tts_error, result.cause = True, str(item.event.abort.cause.value)
            if item.event.finish_reason is not None:
                result.finish_reason = item.event.finish_reason
            if not item.tokens:
                continue
            result.tokens += len(item.tokens)
            t0 = time.perf_counter()
            ready = self.token2wav.push(state, item.tokens)
            vocoder += time.perf_counter() - t0
            for chunk in ready:
                if result.first_packet_seconds is None:
                    result.first_packet_seconds = time.perf_counter() - start
                chunks.append(chunk)
                yield chunk
        bar.close()
        t0 = time.perf_counter()
        tail = self.token2wav.flush(state)
        vocoder += time.perf_counter() - t0
        if tail.size:
            if result.first_packet_seconds is None:
                result.first_packet_seconds = time.perf_counter() - start
            chunks.append(tail)
            yield tail
        result.vocoder_seconds = vocoder
        result.lm_seconds = time.perf_counter() - start - vocoder
        result.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def synthesize(self, text: str, progress: bool = False) -> TTSResult:
        for _ in self.stream(text, progress):
            pass
        return self.last


def _reference_from_audio(cosy: Path, ref_audio, ref_text: str | None) -> tuple[ReferencePrompt, str]:
    from mgm_omni.audio import load_audio
    from mgm_omni.generation.wave.reference import build_reference_prompt, load_reference_frontends

    speech_tokenizer, speaker_encoder = load_reference_frontends(cosy)
    if not ref_text:
        raise CheckpointError("pass --ref-text, the transcript of the reference clip")
    wave, sr = load_audio(ref_audio, sample_rate=16000)
    return build_reference_prompt(wave, sr, speech_tokenizer, speaker_encoder, text=ref_text), ref_text


def default_speechlm() -> str:
    """The official default SpeechLM if it is in the local hub cache, else the built-in tiny model."""
    try:  # local cache only: never touch the network here
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(DEFAULT_SPEECHLM, local_files_only=True))
        if (root / "model.safetensors").exists() or (root / "model.safetensors.index.json").exists():
            return DEFAULT_SPEECHLM
    except Exception:  # not downloaded: fall back
        pass
    return TINY_NAME


def synthesize_to_file(text: str, out: str | os.PathLike, model: str = TINY_NAME, **kwargs) -> TTSResult:
    """Load, speak ``text`` and write a 24 kHz 16-bit WAV to ``out``."""
    pipe = TTSPipeline.load(model, **kwargs)
    result = pipe.synthesize(text, progress=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), result.audio, result.sample_rate, subtype="PCM_16")
    result.path = out
    return result
