"""Small media files written by tests: a video whose frame i is told by its red level, with an optional
mono 440 Hz AAC audio track (the container follows the file's suffix: .mp4, .mkv, ...)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(path: Path, n_frames: int = 20, fps: int = 10, size: tuple[int, int] = (64, 48),
                audio: bool = False) -> Path:
    """Write ``n_frames`` frames of ``size`` (w, h) at ``fps`` (MPEG-4 part 2), plus the audio track's
    ``n_frames / fps`` seconds at 16 kHz when ``audio``; returns ``path``."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if audio:
            astream = out.add_stream("aac", rate=16000)
            astream.layout = "mono"
        for i in range(n_frames):
            img = np.full((h, w, 3), 40, np.uint8)
            img[..., 0] = i * 12 % 256  # frame i is told by its red level
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
        if audio:
            t = np.arange(16000 * n_frames // fps) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format="fltp", layout="mono")
                frame.sample_rate = 16000
                for pkt in astream.encode(frame):
                    out.mux(pkt)
            for pkt in astream.encode():
                out.mux(pkt)
    return path
