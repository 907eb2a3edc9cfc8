"""Audio output files: the path is checked before any work, the audio written in the format its extension names.

A long synthesis must not end in a traceback because ``--out`` was a folder, had no extension, named a
format that cannot be written here, or pointed somewhere unwritable: :func:`check_output` says so first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mgm_omni.cli.common import CLIError

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


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio to ``path`` (a path :func:`check_output` accepted), creating its folders."""
    import soundfile as sf

    fmt, subtype = FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, format=fmt, subtype=subtype)
    return path
