"""The speech engine: a queue of requests, batched into the SpeechLM, each rendered on its own stream.

Two threads. The *decoder* thread takes up to ``max_batch`` waiting jobs (waiting ``batch_window_s`` for
more to arrive), decodes them as ONE batch with the chunked decoder and hands each job's vocoder
tokens to the *renderer* thread (``renderer.StreamRenderer``) as rows come out; the renderer runs
flow + HiFT on each job's own stream state, most urgent job first, and delivers the audio. So decoding
of the next rows overlaps rendering of the previous ones, and B requests share each decode step.

A cancelled job (client disconnected) leaves the batch at the next decoded row: the runner below
reports "no room" for it, which the decoder treats like a full cache and drops from every later step.
Requests that arrive while a batch runs wait for the next batch (the decoder cannot add a prompt to a
running batch), bounded by ``max_queue``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import torch

from mgm_omni.engine.jobs import JobStats, SpeechJob
from mgm_omni.engine.renderer import StreamRenderer
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.speech.generator import SpeechGenerator, SpeechRequest
from mgm_omni.generation.speech.runner import SpeechLMRunner
from mgm_omni.generation.speech_stream import SpeechStream
from mgm_omni.generation.voice import Voice
from mgm_omni.generation.wave.token2wav import StreamSchedule, Token2Wav

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More jobs are waiting than ``max_queue`` allows."""


class CancellableRunner(SpeechLMRunner):
    """A runner whose ``room`` is False for cancelled jobs, so the decoder drops them from the batch."""

    def __init__(self, model, jobs: list[SpeechJob], **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.jobs = jobs
        self.active = list(range(len(jobs)))  # job index of each batch slot, as the decoder keeps them

    def room(self, index: int) -> bool:
        return not self.jobs[self.active[index]].cancelled and super().room(index)

    def keep(self, index) -> None:
        self.active = [self.active[i] for i in index]
        super().keep(index)


class SpeechEngine:
    """Batched, streaming text-to-speech for many concurrent requests.

    Args:
        generator: the SpeechLM with its tokenizer and decode settings (temperature, max rows, seed).
        token2wav: flow + HiFT renderer (used read-only; all state is per job).
        max_batch: jobs decoded together.
        max_queue: waiting jobs beyond which ``submit`` raises :class:`QueueFull`.
        batch_window_s: wait this long after the first waiting job for others to join its batch.
        schedule: token-to-wave streaming schedule (default: on the mouth's streaming grid).
    """

    def __init__(self, generator: SpeechGenerator, token2wav: Token2Wav, max_batch: int = 8, max_queue: int = 64,
                 batch_window_s: float = 0.02, schedule: StreamSchedule | None = None) -> None:
        self.generator, self.token2wav = generator, token2wav
        self.max_batch, self.max_queue, self.batch_window_s = max_batch, max_queue, batch_window_s
        self.schedule = schedule or StreamSchedule(grid=generator.mouth.stream_grid,
                                                   first_hop=generator.mouth.first_hop)
        self.sample_rate = generator.mouth.sample_rate
        self._waiting: deque[SpeechJob] = deque()
        self._cond = threading.Condition()
        self.renderer = StreamRenderer(self.schedule.grid)
        self._stopped = False
        self.running: list[SpeechJob] = []
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /health and tests
        self.recent: deque[SpeechJob] = deque(maxlen=100)  # recently decoded jobs (stats), for tests and benchmarks
        self.thread = threading.Thread(target=self._decode_loop, name="speech-decoder", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------------------ public

    def make_job(self, text: str, voice: Voice, seed: int = 0, loop=None) -> SpeechJob:
        """Build (and validate: raises ``SpeechPromptError``) a job without queueing it; ``seed`` seeds its
        vocoder noise."""
        prompt = self.generator.prompt(SpeechRequest(text, voice.text, voice.reference_tokens))
        stream = SpeechStream(self.token2wav, voice, self.generator.token_stream(), self.schedule, seed,
                              stats=JobStats())
        return SpeechJob(prompt, voice, self.sample_rate, stream, loop)

    def submit(self, job: SpeechJob) -> SpeechJob:
        with self._cond:
            if self._stopped:
                raise RuntimeError("the speech engine is stopped")
            self._waiting = deque(j for j in self._waiting if not j.cancelled)
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_queue})")
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            for job in self._waiting:
                job.finish(RuntimeError("the server is shutting down"))
            self._waiting.clear()
            self._cond.notify_all()
        for job in list(self.running):
            job.cancel()
        self.thread.join(timeout)
        self.renderer.stop(timeout)

    # ------------------------------------------------------------------------------------ decoder thread

    def _next_batch(self) -> list[SpeechJob] | None:
        with self._cond:
            while not self._stopped and not self._waiting:
                self._cond.wait()
            if self._stopped:
                return None
            deadline = time.monotonic() + self.batch_window_s
            while len(self._waiting) < self.max_batch and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            batch = []
            while self._waiting and len(batch) < self.max_batch:
                job = self._waiting.popleft()
                if job.cancelled:
                    job.stats.finish_reason = "cancelled"
                    job.finish()
                else:
                    batch.append(job)
            return batch

    def _decode_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            self.running = batch
            self.batch_sizes.append(len(batch))
            try:
                self._decode(batch)
            except Exception as exc:  # a failed batch fails its jobs, not the server
                log.exception("speech batch of %d failed", len(batch))
                for job in batch:
                    self.renderer.fail(job, exc)
            finally:
                self.running = []
                self.recent.extend(batch)

    def _decode(self, batch: list[SpeechJob]) -> None:
        gen = self.generator
        started = time.perf_counter()
        for job in batch:
            job.stats.queued_s = started - job.submitted
            job.stats.batch_size = len(batch)
        decoder = gen.decoder(gen.runner(CancellableRunner, batch))
        config: DecodeConfig = gen.config
        with torch.inference_mode():
            for event in decoder.stream([job.prompt for job in batch], config):
                job = batch[event.request]
                tokens = job.stream.extract(event)  # the decoder half of the job's speech stream
                if tokens and not job.cancelled:
                    self.renderer.push(job, tokens)
                if event.finish_reason is not None:
                    if job.cancelled:
                        job.stats.finish_reason = "cancelled"
                    self.renderer.end(job)
