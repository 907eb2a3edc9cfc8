"""Encode float audio for HTTP responses: wav, pcm (s16le), flac, mp3, opus, aac; incremental where possible.

Every format starts from the same 16-bit samples (``to_pcm16``), so a streamed response and a whole one
carry identical samples. Streaming encoders exist for ``pcm``, ``wav`` (a header with unknown length,
as live-streaming WAV writers do) and ``mp3`` (MPEG frames are self-delimiting); ``flac``, ``opus``
and ``aac`` need a finished file and are served whole only.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

import av
import numpy as np
import soundfile as sf

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg",
               "opus": "audio/ogg", "aac": "audio/aac"}
STREAMABLE = ("pcm", "wav", "mp3")
_AV_FORMATS = {"mp3": ("libmp3lame", None), "opus": ("libopus", "ogg"), "aac": ("aac", "adts")}


class CodecError(ValueError):
    """A response format this build cannot encode (e.g. FFmpeg without libmp3lame)."""


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 (S,) in [-1, 1] -> little-endian int16 (S,), clipped and rounded."""
    return np.clip(np.round(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype("<i2")


def wav_header(sample_rate: int, n_samples: int | None) -> bytes:
    """44-byte mono 16-bit WAV header; ``n_samples=None`` writes the 0xFFFFFFFF "unknown length" sizes."""
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
            2 * sample_rate, 2, 16) + b"data" + struct.pack("<I", data))


@lru_cache(maxsize=None)
def available_formats() -> tuple[str, ...]:
    """Response formats this installation can encode (mp3/opus/aac depend on FFmpeg's encoders)."""
    have = set(av.codecs_available)
    return tuple(f for f in MEDIA_TYPES if f not in _AV_FORMATS or _AV_FORMATS[f][0] in have)


def check_format(fmt: str, stream: bool) -> None:
    """Raise :class:`CodecError` for a format that cannot be encoded (or streamed)."""
    if fmt not in available_formats():
        raise CodecError(f"response_format {fmt!r} is not available here; use one of {', '.join(available_formats())}")
    if stream and fmt not in STREAMABLE:
        raise CodecError(f"response_format {fmt!r} cannot be streamed; stream one of {', '.join(STREAMABLE)}")


class StreamEncoder:
    """Incremental encoder: ``start()`` bytes, then ``encode(chunk)`` per float chunk, then ``finish()``."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        check_format(fmt, stream=True)
        self.fmt, self.sample_rate = fmt, sample_rate
        self._mp3 = _Mp3(sample_rate) if fmt == "mp3" else None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]

    def start(self) -> bytes:
        return wav_header(self.sample_rate, None) if self.fmt == "wav" else b""

    def encode(self, chunk: np.ndarray) -> bytes:
        pcm = to_pcm16(chunk)
        return self._mp3.encode(pcm) if self._mp3 else pcm.tobytes()

    def finish(self) -> bytes:
        return self._mp3.finish() if self._mp3 else b""


def encode_audio(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole response body of ``audio`` (float32 (S,)) in ``fmt``."""
    check_format(fmt, stream=False)
    pcm = to_pcm16(audio)
    if fmt == "pcm":
        return pcm.tobytes()
    if fmt == "wav":
        return wav_header(sample_rate, pcm.shape[0]) + pcm.tobytes()
    if fmt == "flac":
        buf = io.BytesIO()
        sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    if fmt == "mp3":
        enc = _Mp3(sample_rate)
        return enc.encode(pcm) + enc.finish()
    return _encode_container(pcm, sample_rate, *_AV_FORMATS[fmt])


class _Mp3:
    """libmp3lame through PyAV; packets are MPEG audio frames, so their concatenation is a valid .mp3."""

    def __init__(self, sample_rate: int) -> None:
        self.ctx = av.CodecContext.create("libmp3lame", "w")
        self.ctx.sample_rate, self.ctx.layout, self.ctx.format = sample_rate, "mono", "s16p"
        self.ctx.bit_rate = 64000
        self.ctx.open()
        self.pts = 0

    def _frame(self, pcm: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16p", layout="mono")
        frame.sample_rate, frame.pts = self.ctx.sample_rate, self.pts
        self.pts += pcm.shape[0]
        return frame

    def encode(self, pcm: np.ndarray) -> bytes:
        if pcm.size == 0:
            return b""
        return b"".join(bytes(p) for p in self.ctx.encode(self._frame(pcm)))

    def finish(self) -> bytes:
        return b"".join(bytes(p) for p in self.ctx.encode(None))


def _encode_container(pcm: np.ndarray, sample_rate: int, codec: str, container: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        rate = 48000 if codec == "libopus" else sample_rate  # Opus runs at 48 kHz
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16p", layout="mono")
        frame.sample_rate = sample_rate
        for part in (*resampler.resample(frame), *resampler.resample(None)):
            for packet in stream.encode(part):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
