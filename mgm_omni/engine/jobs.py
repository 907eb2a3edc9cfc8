"""One speech request inside the engine: its prompt, its speech stream, its audio as it is rendered,
cancellation, timings.

The engine's threads feed the job's :class:`~mgm_omni.generation.speech_stream.SpeechStream` (the decoder
thread its rows, the renderer thread its tokens) and put the audio chunks in; the HTTP handler (asyncio) or
the web demo (a thread) takes them out. Cancelling a job (client gone) is seen by the engine at the next
decoded row.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np

from mgm_omni.generation.speech.prompt import PromptRows
from mgm_omni.generation.speech_stream import SpeechStream, StreamStats
from mgm_omni.generation.voice import Voice

_ids = itertools.count(1)


class JobCancelled(RuntimeError):
    """The job was cancelled before it finished."""


@dataclass
class JobStats(StreamStats):
    """How a job went: its stream's stats (from submission) plus queueing, total time and batch size."""

    queued_s: float = 0.0
    total_s: float = 0.0
    batch_size: int = 0


class SpeechJob:
    """A text to speak in one voice; iterate ``chunks()`` (threads) or ``achunks()`` (asyncio).

    Args:
        prompt: the SpeechLM prefill rows and text buffer.
        voice: the voice.
        sample_rate: of the audio chunks.
        stream: the job's speech stream (rows -> tokens -> audio) filling a :class:`JobStats`; its vocoder
            noise is seeded per job, so a job's audio does not depend on its neighbours or on torch's RNG.
        loop: the event loop of an asyncio consumer, if any.
    """

    def __init__(self, prompt: PromptRows, voice: Voice, sample_rate: int, stream: SpeechStream,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not isinstance(stream.stats, JobStats):
            raise TypeError("a job's speech stream must fill JobStats")
        self.id = f"speech-{next(_ids)}"
        self.prompt, self.voice, self.sample_rate, self.stream = prompt, voice, sample_rate, stream
        self.submitted = time.perf_counter()
        self.stats: JobStats = stream.stats
        self.stats.started = self.submitted
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._cancel = threading.Event()
        self._loop = loop
        self._wake = asyncio.Event() if loop is not None else None
        self.done = False

    # ---------------------------------------------------------------- engine side

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def put_audio(self, chunk: np.ndarray) -> None:
        """Deliver a chunk (its stream counted it)."""
        if chunk.size:
            self._put(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        """Close the job: the consumer's iteration ends (or raises ``error``)."""
        if self.done:
            return
        self.done = True
        self.stats.total_s = time.perf_counter() - self.submitted
        self._put(error if error is not None else StopIteration())

    def _put(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: the consumer is gone
                self._cancel.set()

    # ---------------------------------------------------------------- consumer side

    def cancel(self) -> None:
        """Stop working on this job (the client went away); the engine frees its slot at the next row.
        A finished job stays finished."""
        if not self.done:
            self._cancel.set()

    def _pop(self):
        with self._cond:
            return self._items.popleft() if self._items else None

    @staticmethod
    def _unwrap(item):
        if isinstance(item, StopIteration):
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def chunks(self, timeout: float | None = None) -> Iterator[np.ndarray]:
        """Blocking iteration over the audio chunks until the job ends."""
        while True:
            with self._cond:
                if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                    raise TimeoutError(f"{self.id}: no audio for {timeout} s")
                item = self._items.popleft()
            chunk = self._unwrap(item)
            if chunk is None:
                return
            yield chunk

    async def achunks(self) -> AsyncIterator[np.ndarray]:
        """Asyncio iteration over the audio chunks; cancels the job if the consumer stops early."""
        if self._wake is None:
            raise RuntimeError("this job was submitted without an event loop")
        finished = False
        try:
            while True:
                self._wake.clear()
                item = self._pop()
                if item is None:
                    await self._wake.wait()
                    continue
                chunk = self._unwrap(item)
                if chunk is None:
                    finished = True
                    return
                yield chunk
        finally:
            if not finished:
                self.cancel()

    def audio(self) -> np.ndarray:
        """Block until done; all the audio as one float32 array."""
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
