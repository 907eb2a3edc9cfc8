"""The CLI's one progress bar per job (totals, estimates, text around it) and its tts_error explanation."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np

from mgm_omni.cli.progress import JobBar, SpeechProgress, TextProgress
from mgm_omni.cli.speech_report import explain


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _row(kind: str, tokens: int):
    return SimpleNamespace(event=SimpleNamespace(kind=kind), tokens=[0] * tokens)


def _shown(bar_file: io.StringIO) -> list[str]:
    return [s.strip() for s in re.split(r"[\r\n]", bar_file.getvalue()) if "%|" in s]


def test_speech_bar_covers_decoding_and_rendering():
    err = io.StringIO()
    bar = JobBar("speaking", file=err, enabled=True)
    bar.bar.mininterval = 0  # show every update
    p = SpeechProgress(bar, text_tokens=4)
    # chunk 1: 2 text rows, pad rows releasing 12 speech tokens, a separator: 6 speech tokens per text token
    for row in (_row("text", 0), _row("text", 4), _row("pad", 8), _row("sep", 0)):
        p.on_row(row)
    assert p.per_text == 6 and p.expected_tokens() == 24
    assert bar.bar.total == 48 and bar.bar.n == 12  # 12 of 24 tokens decoded, none rendered yet
    p.on_audio(np.zeros(12 * 960, np.float32))  # their audio: 12 tokens of 40 ms at 24 kHz
    assert bar.bar.n == 24 and bar.bar.total == 48
    for row in (_row("text", 4), _row("text", 4), _row("pad", 8), _row("end", 0)):  # longer than estimated
        p.on_row(row)
    assert bar.bar.n == 28 + 12 and bar.bar.total >= bar.bar.n
    p.on_audio(np.zeros(16 * 960, np.float32))
    p.finish()
    assert bar.bar.n == bar.bar.total == 56  # exact at the end: 28 tokens decoded and rendered
    bar.close()
    shown = _shown(err)
    assert shown[-1].startswith("speaking: 100%") and "4/4 text tokens read, 1.1 s of audio" in shown[-1]
    assert any("~ 2/4 text tokens read" in s for s in shown)  # an estimated total says so


def test_text_bar_estimates_then_is_exact():
    err = io.StringIO()
    bar = JobBar("replying", file=err, enabled=True)
    p = TextProgress(bar, estimate=10, limit=100, spoken=True)
    p.on_tokens(5)
    assert bar.bar.total == 20 and bar.bar.n == 5  # 10 text tokens estimated, each also spoken
    p.on_tokens(12)  # past the estimate: it grows, never shown as over 100 %
    assert p.estimate == 15 and bar.bar.total == 30
    p.on_text_end()
    assert bar.bar.total == 24 and bar.bar.n == 12  # the text is done; its speech is not
    p.on_audio(np.zeros(24000 * 3, np.float32))  # 3 s of audio: at most the 12 tokens count
    assert bar.bar.n == 22
    p.finish()
    assert bar.bar.n == bar.bar.total == 24
    bar.close()
    assert TextProgress(JobBar("x", enabled=False), estimate=10**6, limit=64).estimate == 64


def test_streamed_text_goes_around_the_bar():
    out, err = _Terminal(), _Terminal()
    bar = JobBar("transcribing", file=err, out=out, enabled=True)
    assert bar.by_lines
    words = ("word " * 40).strip()
    for piece in words.split(" "):
        bar.text(piece + " ")
    bar.end_text()
    bar.close()
    lines = [line for line in out.getvalue().split("\n") if line.strip()]
    assert len(lines) >= 2 and " ".join(lines).split() == words.split()  # whole lines, nothing lost
    piped_out = io.StringIO()
    bar = JobBar("transcribing", file=_Terminal(), out=piped_out, enabled=True)
    for piece in ("a", "b", "c"):
        bar.text(piece)
    assert piped_out.getvalue() == "abc"  # piped: streamed as it comes
    bar.end_text()
    assert piped_out.getvalue() == "abc\n"
    quiet = JobBar("x", file=io.StringIO())
    assert not quiet.enabled  # not a terminal: no bar


def test_tts_error_is_explained():
    aborts = [SimpleNamespace(chunk=1, row=80, cause=SimpleNamespace(value="step_cap")),
              SimpleNamespace(chunk=2, row=140, cause=SimpleNamespace(value="blank_run"))]
    lines = explain(aborts, "end", 0, 23.5, "out.wav", [9.6, 21.0])
    assert lines[0] == ("tts_error: chunk 2 of the text was cut off about 9.6 s into the audio because it kept "
                        "generating speech far past the length its text needs (the model lost its place in the "
                        "text) ('step_cap').")
    assert "chunk 3" in lines[1] and "long run of silent rows" in lines[1]
    assert "Kept: all 23.50 s of audio in out.wav" in lines[2] and "went on with the rest" in lines[2]
    assert "another --seed" in lines[3]
    stopped = explain([], "max_rows", 17, 4.0, "the reply")
    assert stopped == ["note: decoding stopped at the row limit (--max-rows) before the end of the text (17 text "
                       "tokens were not spoken); the 4.00 s spoken so far are in the reply."]
    assert explain([], "end", 0, 3.0, "x.wav") == []
