"""A WAV file written while the audio is produced, valid at every moment.

``StreamingWavWriter`` appends 16-bit PCM samples and, after each write, rewrites the two size
fields of the RIFF header (the data first, then the header), so a reader opening the file at any
point, or after the process was killed, finds a complete, valid WAV of the audio written so far.
Memory stays flat: nothing is kept but the file handle.

    with StreamingWavWriter("out.wav", 24000) as wav:
        for chunk in tts.stream(text):   # float32 chunks in [-1, 1]
            wav.write(chunk)
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_HEADER = 44  # RIFF (12) + fmt chunk (24) + data chunk header (8)


class StreamingWavWriter:
    """Mono or multi-channel 16-bit PCM WAV, header kept valid after every ``write``.

    Args:
        path: output file (its folder is created; an existing file is replaced).
        sample_rate: samples per second.
        channels: interleaved channels per frame.
        sync: also ``fsync`` after every write (durable against power loss, slower); a killed
            process never needs it, the OS keeps what was written.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int = 1, sync: bool = False) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, got {sample_rate}, {channels}")
        self.path, self.sample_rate, self.channels, self.sync = Path(path), sample_rate, channels, sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close() / the context manager)
        self._file.write(self._header(0))
        self._file.flush()

    def _header(self, data_bytes: int) -> bytes:
        block = 2 * self.channels
        return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
                + b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.channels, self.sample_rate,
                                        self.sample_rate * block, block, 16)
                + b"data" + struct.pack("<I", data_bytes))

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def write(self, audio: np.ndarray) -> None:
        """Append float samples in [-1, 1] ((n,) or (n, channels)); clipped, rounded to 16 bit."""
        if self._file is None:
            raise ValueError("write to a closed StreamingWavWriter")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1 and self.channels == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[1] != self.channels:
            raise ValueError(f"audio must be (n,) or (n, {self.channels}), got {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError("audio holds NaN or infinity")
        if audio.shape[0] == 0:
            return
        pcm = np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        data_bytes = (self.frames + audio.shape[0]) * 2 * self.channels
        if _HEADER + data_bytes > 0xFFFFFFFF:
            raise ValueError("a WAV file holds at most 4 GB of audio")
        f = self._file
        f.seek(0, os.SEEK_END)
        f.write(pcm.tobytes())
        f.flush()  # the samples reach the OS before the header counts them
        self.frames += audio.shape[0]
        f.seek(4)
        f.write(struct.pack("<I", 36 + data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", data_bytes))
        f.flush()
        if self.sync:
            os.fsync(f.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StreamingWavWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
