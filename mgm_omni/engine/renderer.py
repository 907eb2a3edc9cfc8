"""Token-to-wave for many streams on one thread, most urgent stream first.

Each job's vocoder tokens arrive from the decoder as rows come out. The renderer feeds them to the job's own
:class:`~mgm_omni.generation.speech_stream.SpeechStream` (its render half) and, whenever several jobs have work,
serves the one whose audio is least ahead of real time (audio seconds delivered minus seconds since it was
submitted): a new request's first hop goes before an older stream that has audio buffered, which keeps
the time to first audio low under load without starving running streams.

Each job's stream draws HiFT's source noise from its own generator seeded with the job's seed (never torch's
global RNG, which other threads and other engines in the process share), so a job's audio does not depend on
which other jobs ran, in this renderer or any other.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from mgm_omni.engine.jobs import SpeechJob

log = logging.getLogger(__name__)


@dataclass
class _Work:
    job: SpeechJob
    tokens: list[int] = field(default_factory=list)
    ended: bool = False
    error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return bool(self.tokens) or self.ended or self.error is not None or self.job.cancelled

    def priority(self, now: float) -> tuple[bool, float]:
        # Jobs without audio first (oldest first): their first hop is what the time to first audio waits
        # for. Then the stream least ahead of real time (audio delivered minus seconds since submission).
        started = self.job.stats.samples > 0
        return started, self.job.stats.samples / self.job.sample_rate - (now - self.job.submitted)


class StreamRenderer:
    """A render thread fed by ``push`` / ``end`` / ``fail``; delivers audio chunks to the jobs.

    Args:
        grid: tokens rendered per turn at most (the mouth's streaming grid), so one job cannot hold the
            thread for all its hops while others wait for their first audio.
    """

    def __init__(self, grid: int) -> None:
        self.grid = grid
        self._work: dict[str, _Work] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self.thread = threading.Thread(target=self._loop, name="speech-renderer", daemon=True)
        self.thread.start()

    def push(self, job: SpeechJob, tokens: list[int]) -> None:
        self._update(job, lambda w: w.tokens.extend(tokens))

    def end(self, job: SpeechJob) -> None:
        """No more tokens: render the rest and close the job."""
        self._update(job, lambda w: setattr(w, "ended", True))

    def fail(self, job: SpeechJob, error: BaseException) -> None:
        self._update(job, lambda w: setattr(w, "error", error))

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.thread.join(timeout)

    def _update(self, job: SpeechJob, change) -> None:
        with self._cond:
            change(self._work.setdefault(job.id, _Work(job)))
            self._cond.notify_all()

    def _next(self) -> tuple[SpeechJob, list[int], bool, BaseException | None] | None:
        with self._cond:
            while not self._stopped:
                ready = [w for w in self._work.values() if w.ready]
                if ready:
                    now = time.perf_counter()
                    w = min(ready, key=lambda w: w.priority(now))
                    # At most one grid of tokens per turn, so a job whose tokens all arrived at once does not
                    # render every hop (and its flush) in one go while other jobs wait for their first audio.
                    tokens, w.tokens = w.tokens[: self.grid], w.tokens[self.grid:]
                    ended = w.ended and not w.tokens
                    if ended or w.error is not None or w.job.cancelled:
                        del self._work[w.job.id]
                    return w.job, tokens, ended, w.error
                self._cond.wait()
            return None

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            job, tokens, ended, error = item
            if job.done:
                continue
            if job.cancelled or error is not None:
                if job.cancelled:
                    job.stats.finish_reason = "cancelled"
                job.finish(error)
                continue
            try:
                for chunk in job.stream.render_iter(tokens):  # each vocoder call's audio as it is made
                    job.put_audio(chunk)
                if ended:
                    for chunk in job.stream.finish():
                        job.put_audio(chunk)
                if ended:
                    job.finish()
            except Exception as exc:
                log.exception("rendering %s failed", job.id)
                job.finish(exc)
