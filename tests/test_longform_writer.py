"""StreamingWavWriter: a WAV that is complete and valid while it is written and after a hard kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.generation.wave.writer import StreamingWavWriter


def test_file_is_valid_after_every_write(tmp_path):
    path = tmp_path / "out" / "a.wav"
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-0.9, 0.9, n).astype(np.float32) for n in (480, 0, 1000, 7)]
    with StreamingWavWriter(path, 24000) as wav:
        done = 0
        for chunk in chunks:
            wav.write(chunk)
            done += chunk.size
            data, sr = sf.read(str(path), dtype="float32")  # read while the writer is open
            assert sr == 24000 and data.shape == (done,)
        assert wav.seconds == done / 24000
    audio = np.concatenate(chunks)
    data, _ = sf.read(str(path), dtype="int16")
    assert np.array_equal(data, np.rint(audio * 32767).astype(np.int16))  # libsndfile's PCM_16 scaling
    info = sf.info(str(path))
    assert (info.subtype, info.channels, info.frames) == ("PCM_16", 1, audio.size)


def test_clipping_and_bad_input(tmp_path):
    with StreamingWavWriter(tmp_path / "b.wav", 16000) as wav:
        wav.write(np.array([2.0, -2.0, 0.5], np.float32))
        with pytest.raises(ValueError, match="NaN"):
            wav.write(np.array([np.nan], np.float32))
        with pytest.raises(ValueError, match=r"\(n,\)"):
            wav.write(np.zeros((3, 2), np.float32))
    data, _ = sf.read(str(tmp_path / "b.wav"), dtype="int16")
    assert data.tolist() == [32767, -32767, 16384]
    with pytest.raises(ValueError, match="closed"):
        wav.write(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="positive"):
        StreamingWavWriter(tmp_path / "c.wav", 0)


def test_killed_writer_leaves_a_readable_file(tmp_path):
    path = tmp_path / "killed.wav"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from mgm_omni.generation.wave.writer import StreamingWavWriter
        wav = StreamingWavWriter({str(path)!r}, 24000)
        chunk = np.full(2400, 0.25, np.float32)
        for i in range(100000):
            wav.write(chunk)
            print(i + 1, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    written = 0
    deadline = time.time() + 60
    while written < 20 and time.time() < deadline:
        written = int(proc.stdout.readline() or 0)
    proc.send_signal(signal.SIGKILL)  # no close(), no atexit: the header must already be right
    proc.wait()
    assert written >= 20
    data, sr = sf.read(str(path), dtype="float32")
    assert sr == 24000
    assert data.size % 2400 == 0 and data.size >= written * 2400  # every reported chunk, whole chunks only
    assert np.allclose(data, 0.25, atol=1e-4)
