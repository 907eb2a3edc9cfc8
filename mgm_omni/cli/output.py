"""Audio output files: the path is checked before any work, the audio written as it is made.

A long synthesis must not end in a traceback because ``--out`` was a folder, had no extension, named a
format that cannot be written here, or pointed somewhere unwritable: :func:`check_output` says so first.
:class:`AudioFile` then writes each chunk in the format the extension names as soon as it arrives, so the
whole audio is never held in memory. A WAV is valid at every moment (its header is rewritten after each
chunk), also if the process is killed; FLAC, OGG and MP3 are complete once the file is closed, which
happens on a normal end, an error or Ctrl-C, but not when the process is killed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mgm_omni.cli.common import CLIError
from mgm_omni.generation.wave.writer import StreamingWavWriter

# extension -> (libsndfile format, subtype)
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}


def writable_formats() -> list[str]:
    """The extensions this machine's libsndfile can write (MP3 needs libsndfile >= 1.1)."""
    import soundfile as sf

    available = sf.available_formats()
    return [ext for ext, (fmt, _) in FORMATS.items() if fmt in available]


def check_output(path: str, flag: str = "--out") -> Path:
    """The output path, or a :class:`CLIError` saying why nothing could be written there.

    Checked: not a folder, an extension of a writable audio format, and that a file can be created in the
    nearest existing folder on the way (nothing is created yet).
    """
    exts = writable_formats()
    choices = ", ".join(exts)
    out = Path(path).expanduser()
    if not path or path.endswith(("/", os.sep)) or out.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; give a file name, e.g. {flag} {out / 'speech.wav'}")
    suffix = out.suffix.lower()
    if not suffix:
        raise CLIError(f"{flag} {path}: has no extension; add one of {choices} (e.g. {path}.wav)")
    if suffix not in exts:
        why = "is not supported by this machine's libsndfile" if suffix in FORMATS else "is not an audio format"
        raise CLIError(f"{flag} {path}: {suffix} {why}; use one of {choices}")
    if out.exists() and not os.access(out, os.W_OK):
        raise CLIError(f"{flag} {path}: the file exists and is not writable")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CLIError(f"{flag} {path}: {folder} is a file, not a folder")
    try:  # the only sure test (permissions, read-only file systems, root): make a file and remove it
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CLIError(f"{flag} {path}: cannot write in {folder}: {exc.strerror or exc}") from None
    return out


KILL_SAFE = (".wav",)  # formats whose file is valid at every moment, also if the process is killed


class AudioFile:
    """Mono float audio written chunk by chunk to ``path`` (a path :func:`check_output` accepted).

    The folders are created and the file replaced on opening; ``write`` appends a chunk at once (16-bit
    PCM for WAV and FLAC, Vorbis for OGG, MPEG layer III for MP3); ``close`` (or leaving the ``with``
    block) finishes the file. Nothing but the counts is kept.
    """

    def __init__(self, path: Path, sample_rate: int) -> None:
        import soundfile as sf

        fmt, subtype = FORMATS[path.suffix.lower()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.sample_rate, self.frames = path, sample_rate, 0
        if fmt == "WAV":
            self._file = StreamingWavWriter(path, sample_rate)
        else:
            self._file = sf.SoundFile(str(path), "w", sample_rate, 1, subtype, format=fmt)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def kill_safe(self) -> bool:
        """Whether the file is valid at every moment (WAV), not only once closed."""
        return self.path.suffix.lower() in KILL_SAFE

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32)
        self._file.write(chunk)
        self.frames += chunk.shape[0]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
