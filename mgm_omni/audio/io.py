"""Audio loading: any common file (or bytes, or a video's audio track), mixed to mono, resampled with soxr.

Every failure on bad input is an ``AudioError`` with a one-line message.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr
import torch

DEFAULT_MAX_SECONDS = 2 * 3600.0  # guard against decoding hours of audio into memory by accident


class AudioError(ValueError):
    """Audio input that cannot be used: missing, unreadable, empty, non-finite, too long or badly shaped."""




def resample(wave: torch.Tensor, orig_sr: int, new_sr: int, quality: str = "HQ") -> torch.Tensor:
    """Resample (..., S) audio from ``orig_sr`` to ``new_sr`` with soxr (librosa's default resampler).

    Returns a float32 tensor (..., S'), S' = S * new_sr / orig_sr rounded to the nearest integer (by soxr).
    """
    _check_rate(orig_sr, "orig_sr")
    _check_rate(new_sr, "new_sr")
    wave = torch.as_tensor(wave)
    if orig_sr == new_sr:
        return wave.float()
    lead, n = wave.shape[:-1], wave.shape[-1]
    frames = wave.detach().float().reshape(-1, n).T.contiguous().cpu().numpy()  # (S, channels)
    out = soxr.resample(frames, orig_sr, new_sr, quality=quality)
    return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, -1).to(wave.device)


def load_audio(
    source: str | os.PathLike | bytes | io.IOBase,
    sample_rate: int | None = None,
    mono: bool = True,
    channel: int | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[torch.Tensor, int]:
    """Decode an audio file (wav, flac, ogg, mp3, ... or the first audio track of mp4/mkv/webm).

    soundfile (libsndfile) decodes what it knows; anything else goes through PyAV (FFmpeg).

    Args:
        source: a path, the file's bytes, or a binary file object.
        sample_rate: resample to this rate (soxr HQ); None keeps the file's rate.
        mono: average the channels into one.
        channel: keep only this channel instead (the official MGM loader keeps channel 0).
        max_seconds: refuse longer audio, checked from the header before decoding where the format allows.
    Returns:
        (wave, sr): float32 (S,) when mono or channel is set, else (C, S); and its sample rate.
    """
    name = _describe(source)
    if sample_rate is not None:
        _check_rate(sample_rate, "sample_rate")
    if max_seconds is not None and not max_seconds > 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds}")
    data = _open_source(source, name)
    try:
        frames, sr = _read_soundfile(data, name, max_seconds)
    except AudioError:
        raise
    except Exception as sf_err:  # libsndfile does not know the format: let FFmpeg try
        try:
            frames, sr = _read_av(data, name, max_seconds)
        except AudioError:
            raise
        except Exception as av_err:
            raise AudioError(
                f"{name}: unreadable or unsupported audio "
                f"(libsndfile: {_one_line(sf_err)}; ffmpeg: {_one_line(av_err)})"
            )
    if frames.shape[1] == 0:
        raise AudioError(f"{name}: zero-length audio (no samples)")
    if not np.isfinite(frames).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    wave = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))  # (C, S)
    if channel is not None:
        if not 0 <= channel < wave.shape[0]:
            raise AudioError(f"{name}: channel {channel} requested but the audio has {wave.shape[0]}")
        wave = wave[channel]
    elif mono:
        wave = wave.mean(dim=0)
    if sample_rate is not None and sample_rate != sr:
        wave, sr = resample(wave, sr, sample_rate), sample_rate
    return wave, sr


def _check_rate(sr, what: str) -> None:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"{what} must be a positive integer number of Hz, got {sr!r}")


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__} audio>"


def _one_line(err: BaseException) -> str:
    # libsndfile and FFmpeg keep the bare reason in these attributes; str() adds object reprs.
    text = getattr(err, "error_string", None) or getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())[:200] or type(err).__name__


def _open_source(source, name: str):
    """A path string or a seekable in-memory file, after the cheap checks (exists, not empty)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: file not found")
        if not path.is_file():
            raise AudioError(f"{name}: not a regular file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: empty file (0 bytes)")
        return str(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    elif hasattr(source, "read"):
        raw = source.read()
    else:
        raise AudioError(f"cannot read audio from a {type(source).__name__}; pass a path, bytes or a file")
    if len(raw) == 0:
        raise AudioError(f"{name}: empty input (0 bytes)")
    return io.BytesIO(raw)


def _too_long(name: str, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"{name}: audio is {seconds:.1f} s long, over the max_seconds={max_seconds:g} limit")


def _read_soundfile(data, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    if isinstance(data, io.BytesIO):
        data.seek(0)
    with sf.SoundFile(data) as f:
        sr, n = f.samplerate, f.frames
        if sr <= 0:
            raise AudioError(f"{name}: invalid sample rate {sr} in the header")
        if max_seconds is not None and n > max_seconds * sr:
            raise _too_long(name, n / sr, max_seconds)
        frames = f.read(dtype="float32", always_2d=True)  # (S, C)
    return frames.T, sr


def _read_av(data, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    if isinstance(data, io.BytesIO):
        data.seek(0)
    with av.open(data, mode="r") as container:
        if not container.streams.audio:
            raise AudioError(f"{name}: the file has no audio track")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        if not sr or sr <= 0:
            raise AudioError(f"{name}: invalid sample rate {sr} in the audio track")
        exact = None  # samples in the track per its own header (mp4 knows; used to drop encoder padding)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
            exact = round(seconds * sr)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = None
        if max_seconds is not None and seconds is not None and seconds > max_seconds:
            raise _too_long(name, seconds, max_seconds)
        # The header may lie or be absent, so the decode itself is bounded too.
        limit = None if max_seconds is None else int(max_seconds * sr) + 1
        to_float = av.AudioResampler(format="fltp")  # planar float32, same layout and rate
        chunks, total = [], 0
        for frame in container.decode(stream):
            for out in to_float.resample(frame):
                chunks.append(out.to_ndarray())  # (C, n)
                total += chunks[-1].shape[1]
            if limit is not None and total > limit:
                raise _too_long(name, total / sr, max_seconds)
        for out in to_float.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return np.zeros((1, 0), dtype=np.float32), sr
    frames = np.concatenate(chunks, axis=1)
    return (frames[:, :exact] if exact else frames), sr
