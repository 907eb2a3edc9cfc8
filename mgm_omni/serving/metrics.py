"""Prometheus text-format metrics (counters, gauges, histograms with labels), thread-safe, no dependency.

Exposed at ``GET /metrics``: requests by endpoint and status, request latency, time to first audio,
real-time factor (processing seconds / audio seconds), audio seconds produced, queue depth.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for n, v in zip(names, values))
    return "{" + inner + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            return [f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in sorted(self.values.items())]


class Gauge(_Metric):
    """A value read at scrape time from ``fn``."""

    kind = "gauge"

    def __init__(self, name: str, help: str, fn: Callable[[], float]) -> None:
        super().__init__(name, help)
        self.fn = fn

    def lines(self) -> list[str]:
        return [f"{self.name} {float(self.fn()):g}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list] = {}  # key -> [bucket counts..., sum, count]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            s = self.series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            i = bisect.bisect_left(self.buckets, value)
            if i < len(self.buckets):
                s[i] += 1
            s[-2] += value
            s[-1] += 1

    def count(self, **labels: str) -> int:
        s = self.series.get(self._key(labels))
        return 0 if s is None else s[-1]

    def lines(self) -> list[str]:
        out = []
        with self._lock:
            for key, s in sorted(self.series.items()):
                running = 0
                for bound, n in zip(self.buckets, s):
                    running += n
                    out.append(f"{self.name}_bucket{_labels(self.label_names + ('le',), key + (f'{bound:g}',))} {running}")
                out.append(f"{self.name}_bucket{_labels(self.label_names + ('le',), key + ('+Inf',))} {s[-1]}")
                out.append(f"{self.name}_sum{_labels(self.label_names, key)} {s[-2]:g}")
                out.append(f"{self.name}_count{_labels(self.label_names, key)} {s[-1]}")
        return out


class ServerMetrics:
    """The server's metrics; ``render()`` is the ``/metrics`` body."""

    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        self.requests = Counter("mgm_requests_total", "HTTP requests by endpoint and status", ("endpoint", "status"))
        self.latency = Histogram("mgm_request_seconds", "request handling time (to the response headers for streams)",
                                 LATENCY_BUCKETS, ("endpoint",))
        self.first_audio = Histogram("mgm_time_to_first_audio_seconds",
                                     "submission to first audio chunk of a speech job", LATENCY_BUCKETS)
        self.rtf = Histogram("mgm_real_time_factor", "speech job wall time / audio duration", RTF_BUCKETS)
        self.audio_seconds = Counter("mgm_audio_seconds_total", "seconds of speech produced")
        self.cancelled = Counter("mgm_speech_cancelled_total", "speech jobs cancelled by a disconnecting client")
        self._all = [self.requests, self.latency, self.first_audio, self.rtf, self.audio_seconds, self.cancelled,
                     Gauge("mgm_queue_depth", "speech jobs waiting for a batch", queue_depth),
                     Gauge("mgm_running_jobs", "speech jobs in the running batch", running)]

    def observe_job(self, stats, sample_rate: int) -> None:
        """Record a finished speech job (``jobs.JobStats``)."""
        if stats.first_audio_s is not None:
            self.first_audio.observe(stats.first_audio_s)
        seconds = stats.samples / sample_rate
        self.audio_seconds.inc(seconds)
        if seconds > 0:
            self.rtf.observe(stats.total_s / seconds)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._all:
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"
