"""Text to speech, end to end: SpeechLM rows stream into token2wav as they are decoded.

    mouth = resolve_mouth("path/or/hub-id")            # mgm_omni.hub: names -> a local directory
    tts = TTSPipeline.load(mouth.path, ref_audio="voice.wav", ref_text="...")
    for chunk in tts.stream("Long text ..."):           # float32 chunks at the mouth's rate, the first after ~1-2 s
        play(chunk)
    tts.last                                            # counts and timings (no audio: nothing is accumulated)
    tts.synthesize("Short text.").audio                 # the whole array, when the caller asks for it

Memory is flat in the length of the text: a stream keeps no audio it has handed out (the caller writes or
plays each chunk, e.g. with ``wave.writer.StreamingWavWriter``); only ``synthesize`` gathers the chunks.

The pipeline takes a model directory and reads what it is from there (``MouthSpec``): text front-end,
delay rows, vocoder stack, reference front-end, sample rate. The voice is a :class:`~mgm_omni.generation.voice.Voice`:
given, made from a clip by the model's own front-end, or the one the model ships.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mgm_omni.audio import load_audio
from mgm_omni.checkpoint import CheckpointError
from mgm_omni.checkpoint.manifest import verify_checksums
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.speech.generator import SpeechGenerator, SpeechRequest, StreamedRow
from mgm_omni.generation.speech_stream import SpeechStream
from mgm_omni.generation.voice import Voice, VoiceError, shipped_voice
from mgm_omni.generation.wave.assets import find_cosyvoice_dir, load_token2wav
from mgm_omni.generation.wave.token2wav import drained
from mgm_omni.generation.wave.frontends import voice_frontend
from mgm_omni.generation.wave.hifigan_stack import load_hifigan_stack
from mgm_omni.generation.wave.ref_transcript import transcribe_reference
from mgm_omni.generation.wave.token2wav import StreamSchedule, Token2Wav
from mgm_omni.generation.wave.writer import StreamingWavWriter

log = logging.getLogger(__name__)


@dataclass
class TTSResult:
    """What one synthesis produced: counts and timings (seconds); ``audio`` only from ``synthesize``.

    ``finish_reason`` is the decoder's (``end``, ``max_rows``, ``cache_full``), or ``stopped`` when the
    caller ended the stream early (closed it, or an exception such as Ctrl-C went through it).
    """

    sample_rate: int
    samples: int = 0  # audio samples handed out
    rows: int = 0
    tokens: int = 0
    tts_error: bool = False
    cause: str | None = None
    finish_reason: str | None = None
    lm_seconds: float = 0.0
    vocoder_seconds: float = 0.0
    first_packet_seconds: float | None = None
    path: Path | None = None
    audio: np.ndarray | None = None  # the whole float32 audio, kept only when asked for (``synthesize``)
    extra: dict = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.sample_rate

    def summary(self) -> str:
        total = self.lm_seconds + self.vocoder_seconds
        rtf = total / self.audio_seconds if self.audio_seconds else float("nan")
        where = f" -> {self.path}" if self.path else ""
        status = f"tts_error ({self.cause})" if self.tts_error else (self.finish_reason or "ok")
        first = f", first packet {self.first_packet_seconds:.2f} s" if self.first_packet_seconds is not None else ""
        return (f"{self.audio_seconds:.2f} s of audio{where}: {self.rows} rows, {self.tokens} speech tokens, "
                f"LM {self.lm_seconds:.2f} s + vocoder {self.vocoder_seconds:.2f} s, RTF {rtf:.2f}{first}; {status}")


class TTSPipeline:
    """A :class:`SpeechGenerator` (rows), a :class:`Token2Wav` (audio) and one voice.

    Args:
        generator, token2wav: the mouth's SpeechLM side and its renderer.
        voice: the voice to speak in.
        schedule: the token-to-wave hop schedule (default: on the mouth's streaming grid).
    """

    def __init__(self, generator: SpeechGenerator, token2wav: Token2Wav, voice: Voice,
                 schedule: StreamSchedule | None = None) -> None:
        self.generator, self.token2wav, self.voice = generator, token2wav, voice
        self.mouth: MouthSpec = generator.mouth
        self.schedule = schedule or StreamSchedule(grid=self.mouth.stream_grid, first_hop=self.mouth.first_hop)
        self.last: TTSResult | None = None

    @property
    def sample_rate(self) -> int:
        return self.mouth.sample_rate

    @classmethod
    def load(cls, model_dir: str | os.PathLike, voice: Voice | None = None, ref_audio: str | os.PathLike | None = None,
             ref_text: str | None = None, cosyvoice_path: str | os.PathLike | None = None,
             dtype: str | None = None, device: str = "cpu", temperature: float = 0.3, top_k: int = 50,
             top_p: float = 1.0, max_rows: int = 8192, seed: int | None = 0, quantize: str | None = None,
             transcriber: Callable[[torch.Tensor], str] | None = None) -> TTSPipeline:
        """Load a mouth directory (resolve names with ``mgm_omni.hub.resolve_mouth`` first) with its speech decoder.

        The voice is ``voice``, else the clip ``ref_audio`` with its transcript ``ref_text`` through the model's
        own reference front-end, else the voice the model ships (``MouthSpec.default_voice``). A missing clip or
        transcript is reported before anything loads. ``dtype`` defaults to the mouth's; ``quantize="int8"``: int8
        weight-only SpeechLM layers (a CPU speed mode, see ``cpu_linear``). ``transcriber`` (16 kHz wave -> text,
        see ``wave.ref_transcript.reference_transcriber``) writes the transcript of a clip given without one.
        """
        root = Path(model_dir)
        if not (root / "config.json").is_file():
            raise CheckpointError(f"{root}: not a model directory (no config.json); model names and hub ids are "
                                  "resolved by mgm_omni.hub.resolve_mouth")
        if voice is None and ref_audio is not None:
            if not Path(ref_audio).is_file():
                raise FileNotFoundError(f"reference audio not found: {ref_audio}")
            if (not ref_text or not ref_text.strip()) and transcriber is None:
                raise VoiceError("pass the transcript of the reference clip (--ref-text) with --ref-audio")
        spec = MouthSpec.from_dir(root, cosyvoice_path)
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        config = DecodeConfig(sampling=sampling, max_new_rows=max_rows, seed=seed)
        generator, token2wav = load_mouth(root, config, dtype, device, quantize, cosyvoice_path)
        if voice is None and ref_audio is not None:
            if not ref_text or not ref_text.strip():
                ref_text = transcribe_reference(load_audio(ref_audio, sample_rate=16000)[0], transcriber)
            voice = Voice.from_audio(ref_audio, ref_text, voice_frontend(spec, root, cosyvoice_path))
        if voice is None:
            voice = shipped_voice(root, spec)
        if voice is None:
            raise VoiceError(f"{root} ships no voice: pass --ref-audio with --ref-text (a 3-30 s clip of the voice "
                             "to clone and its transcript), or --voice with a registered voice")
        return cls(generator, token2wav, voice)

    def stream(self, text: str, progress: bool = False,
               on_row: Callable[[StreamedRow], None] | None = None) -> Iterator[np.ndarray]:
        """Audio chunks (float32, at ``sample_rate``) as the text is spoken; ``self.last`` holds the result.

        Nothing is accumulated: ``self.last`` counts the samples (its ``audio`` stays ``None``) and no chunk
        is referenced here once the next one is made. ``on_row`` sees every decoded row as it is made, with
        the vocoder tokens it released.
        """
        gen = self.generator
        prompt = gen.prompt(SpeechRequest(text, self.voice.text, self.voice.reference_tokens))
        # The vocoder's source noise comes from the stream's own generator seeded like the decoder (torch's
        # global RNG only when the seed is None): the same text and seed give the same audio, whatever other
        # threads do with the global RNG meanwhile (a server's renderer seeds its jobs the same way).
        speech = SpeechStream(self.token2wav, self.voice, gen.token_stream(), self.schedule, seed=gen.config.seed)
        result = self.last = TTSResult(self.sample_rate)
        bar = tqdm(desc="speaking", unit="row", disable=not progress, leave=False)
        done = False
        try:
            for event in gen.decoder().stream([prompt]):
                bar.update(1)
                tokens = speech.extract(event)
                if on_row is not None:
                    on_row(StreamedRow(event, tokens))
                yield from _handed_out(speech.render_iter(tokens), result)  # each vocoder call's audio at once
            yield from _handed_out(speech.finish(), result)
            done = True
        finally:
            bar.close()
            stats = speech.stats
            result.rows, result.tokens = stats.rows, stats.tokens
            result.finish_reason = stats.finish_reason if done else "stopped"
            result.tts_error, result.cause = stats.tts_error, stats.cause
            result.vocoder_seconds = stats.vocoder_s
            result.lm_seconds = time.perf_counter() - stats.started - stats.vocoder_s
            result.first_packet_seconds = stats.first_audio_s

    def synthesize(self, text: str, progress: bool = False) -> TTSResult:
        """Speak ``text`` to the end; the result's ``audio`` holds the whole waveform (in memory: for long
        text, write the chunks of :meth:`stream` as they come, or use :func:`synthesize_to_file`)."""
        chunks = list(self.stream(text, progress))
        result = self.last
        result.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return result


def load_mouth(model_dir: str | os.PathLike, config: DecodeConfig | None = None, dtype: str | None = None,
               device: str = "cpu", quantize: str | None = None,
               cosyvoice_path: str | os.PathLike | None = None) -> tuple[SpeechGenerator, Token2Wav]:
    """The SpeechLM side and the token-to-wave stack a mouth directory declares (``dtype``: the mouth's by default)."""
    root = Path(model_dir)
    spec = MouthSpec.from_dir(root, cosyvoice_path)
    verify_checksums(root, required=False)  # a mouth that ships checksums.json (ours) is checked before loading
    generator = SpeechGenerator.from_pretrained(root, dtype=getattr(torch, dtype or spec.dtype), device=device,
                                                config=config, quantize=quantize)
    if spec.token2wav == "flow-hifigan":
        token2wav = load_hifigan_stack(Path(cosyvoice_path) if cosyvoice_path else root / spec.token2wav_dir, spec)
    else:
        token2wav = load_token2wav(find_cosyvoice_dir(root, cosyvoice_path, spec.token2wav_dir), spec.token2wav)
    return generator, token2wav


def _handed_out(chunks: list[np.ndarray] | Iterator[np.ndarray], result: TTSResult) -> Iterator[np.ndarray]:
    """Yield the chunks, counting them into ``result``; each leaves the list (or iterator) before it is
    yielded, so once the caller lets go of it nothing here keeps it alive while the next ones are made."""
    if isinstance(chunks, list):
        chunks = drained(chunks)
    for chunk in chunks:
        result.samples += chunk.shape[0]
        yield chunk


def synthesize_to_file(text: str, out: str | os.PathLike, model_dir: str | os.PathLike, **kwargs) -> TTSResult:
    """Load, speak ``text`` and write a 16-bit WAV at the mouth's rate to ``out`` as the audio is made.

    The file is a valid WAV of the audio so far at every moment (if the run is interrupted, it holds what was
    spoken); memory does not grow with the length of the text.
    """
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise ValueError(f"synthesize_to_file writes WAV; {out} does not end in .wav")
    pipe = TTSPipeline.load(model_dir, **kwargs)
    with StreamingWavWriter(out, pipe.sample_rate) as wav:
        for chunk in pipe.stream(text, progress=True):
            wav.write(chunk)
    result = pipe.last
    result.path = out
    return result
