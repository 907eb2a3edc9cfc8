"""One progress bar per job on stderr (total and ETA over decoding and rendering), and text that does not tear it.

The bar is drawn only on a terminal (``MGM_OMNI_PROGRESS=1`` forces it, ``0`` hides it). When the streamed
text goes to the same terminal it is printed in whole lines above the bar; piped, it streams as it comes.
Totals that cannot be known in advance (how long a reply or a transcript will be) are estimates, shown
with ``~`` and refined as the job runs; they are exact when it ends.
"""

from __future__ import annotations

import os
import shutil
import sys

from tqdm import tqdm

FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"  # tqdm puts ", " before postfix
AUDIO_SECONDS_PER_TEXT_TOKEN = 0.3  # prior for speech length (about 3 text tokens per spoken second)


def _wanted(stream) -> bool:
    forced = os.environ.get("MGM_OMNI_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return hasattr(stream, "isatty") and stream.isatty()


class JobBar:
    """A bar for one job; ``update(done, total)`` in any unit, ``text(piece)`` for streamed output."""

    def __init__(self, desc: str, file=None, out=None, enabled: bool | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.enabled = _wanted(self.file) if enabled is None else enabled
        self.bar = tqdm(total=1.0, desc=desc, file=self.file, disable=not self.enabled, bar_format=FORMAT,
                        leave=False, dynamic_ncols=True, mininterval=0.2)
        # Streamed text shares the terminal with the bar: print it line by line above the bar.
        self.by_lines = self.enabled and self.file is not self.out and _wanted(self.out) and self.file.isatty()
        self.pending = ""

    def describe(self, desc: str) -> None:
        self.bar.set_description_str(desc, refresh=False)

    def update(self, done: float, total: float, info: str = "", estimated: bool = False) -> None:
        """Show ``done`` of ``total`` (``estimated``: total is a guess, shown with ``~``)."""
        total = max(float(total), float(done), 1e-9)
        self.bar.total = total
        self.bar.set_postfix_str(("~ " if estimated else "") + info, refresh=False)
        self.bar.update(float(done) - self.bar.n)
        if done >= total:
            self.bar.refresh()  # the last state is always drawn, however recent the previous one

    def text(self, piece: str) -> None:
        """Streamed text for stdout."""
        if not self.by_lines:
            print(piece, end="", flush=True, file=self.out)
            return
        self.pending += piece
        width = max(20, shutil.get_terminal_size((80, 20)).columns - 1)
        while "\n" in self.pending or len(self.pending) > width:
            cut = self.pending.find("\n")
            if cut < 0 or cut > width:
                cut = self.pending.rfind(" ", 0, width)
                cut = cut if cut > 0 else width
            line, self.pending = self.pending[:cut], self.pending[cut:].lstrip(" ").removeprefix("\n")
            self.bar.write(line, file=self.out)

    def end_text(self) -> None:
        """End the streamed text with a newline (the rest of a line shown above the bar)."""
        if self.by_lines:
            self.bar.write(self.pending, file=self.out)
            self.pending = ""
        else:
            print(file=self.out, flush=True)

    def close(self) -> None:
        self.bar.close()


class SpeechProgress:
    """A text-to-speech job as one fraction: every speech token is decoded, then rendered to audio, so the work
    is twice the speech tokens. Their number is estimated from the text tokens times the speech tokens per text
    token of the chunks finished so far (a prior before the first), and is exact when the job ends."""

    def __init__(self, bar: JobBar, text_tokens: int, sample_rate: int = 24000, token_rate: float = 25.0) -> None:
        self.bar, self.text_tokens = bar, max(1, text_tokens)
        self.sample_rate, self.samples_per_token = sample_rate, sample_rate / token_rate
        self.per_text = AUDIO_SECONDS_PER_TEXT_TOKEN * token_rate
        self.placed = self.tokens = self.rendered_samples = 0

    def on_row(self, item) -> None:
        """A :class:`~mgm_omni.generation.speech.generator.StreamedRow` (anything with ``event.kind`` and
        ``tokens``)."""
        kind = item.event.kind
        if kind == "text":
            self.placed += 1
        self.tokens += len(item.tokens)
        if kind == "sep" and self.placed:  # a chunk is finished: its speech per text token is known
            self.per_text = self.tokens / self.placed
        self._show()

    def on_audio(self, samples) -> None:
        self.rendered_samples += len(samples)
        self._show()

    def expected_tokens(self) -> float:
        return max(self.text_tokens * self.per_text, self.tokens * 1.05)

    def _show(self) -> None:
        rendered = min(self.tokens, self.rendered_samples / self.samples_per_token)
        self.bar.update(self.tokens + rendered, 2 * self.expected_tokens(), self._info(), estimated=True)

    def _info(self) -> str:
        return (f"{self.placed}/{self.text_tokens} text tokens read, "
                f"{self.rendered_samples / self.sample_rate:.1f} s of audio")

    def finish(self) -> None:
        total = 2 * max(self.tokens, self.rendered_samples / self.samples_per_token, 1)
        self.bar.update(total, total, self._info())


class TextProgress:
    """A job that generates text tokens (a transcript, a chat reply), optionally spoken: the total is the
    token count, estimated until the text ends (at most ``limit``), twice that when the reply is spoken."""

    def __init__(self, bar: JobBar, estimate: int, limit: int, spoken: bool = False, sample_rate: int = 24000) -> None:
        self.bar, self.limit, self.spoken = bar, limit, spoken
        self.estimate = max(1, min(estimate, limit))
        self.tokens, self.finished, self.audio_samples = 0, False, 0
        self.sample_rate = sample_rate

    def on_tokens(self, tokens: int) -> None:
        """``tokens`` generated so far."""
        self.tokens = tokens
        if self.tokens >= self.estimate and not self.finished:
            self.estimate = min(self.limit, max(self.tokens + 1, int(self.tokens * 1.25)))
        self._show()

    def on_text_end(self) -> None:
        self.finished = True
        self._show()

    def on_audio(self, samples) -> None:
        self.audio_samples += len(samples)
        self._show()

    def _show(self) -> None:
        total_text = self.tokens if self.finished else self.estimate
        info = f"{self.tokens} tokens"
        done, total = float(self.tokens), float(total_text)
        if self.spoken:
            seconds = self.audio_samples / self.sample_rate
            done += min(self.tokens, seconds / AUDIO_SECONDS_PER_TEXT_TOKEN)
            total *= 2
            info += f", {seconds:.1f} s of audio"
        self.bar.update(done, total, info, estimated=not self.finished)

    def finish(self) -> None:
        self.finished = True
        total = self.tokens * (2 if self.spoken else 1)
        self.bar.update(total, total, f"done, {self.tokens} tokens")
