"""The server's counters and histograms, written in the Prometheus text exposition format (0.0.4).

No client library: a few counters and histograms, updated on the event loop only (no locks needed),
and :meth:`Metrics.render` writing them out for ``GET /metrics``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: request latency buckets (seconds): a BM25 search takes milliseconds, an LLM rerank seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: batch size buckets (requests per model call)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs.items()) + "}"


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class Histogram:
    """Cumulative buckets, a sum and a count (one label set)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = next((j for j, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Mapping[str, str]) -> Iterable[str]:
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            yield f"{name}_bucket{_labels({**labels, 'le': _number(bound)})} {running}"
        yield f"{name}_sum{_labels(labels)} {_number(self.sum)}"
        yield f"{name}_count{_labels(labels)} {self.count}"


class Metrics:
    """Requests by endpoint and status, latency and queue-wait histograms, batch sizes, and gauges.

    Parameters
    ----------
    gauges : mapping name -> (help, callable)
        Values read at render time (queue depth, requests in flight).
    """

    def __init__(self, gauges: Mapping[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.queue_wait = Histogram(LATENCY_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.gauges = dict(gauges or {})

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, str(status))] += 1
        self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int, waits: Iterable[float]) -> None:
        self.batch_sizes.observe(size)
        for w in waits:
            self.queue_wait.observe(w)

    def render(self) -> str:
        """All metrics in the text exposition format."""
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

        head("attnsift_requests_total", "counter",
             "HTTP requests by endpoint and status (499: the client went away before the answer).")
        for (endpoint, status), n in sorted(self.requests.items()):
            out.append(f"attnsift_requests_total{_labels({'endpoint': endpoint, 'status': status})} {n}")
        head("attnsift_request_duration_seconds", "histogram", "Time from a request's arrival to its answer.")
        for endpoint, hist in sorted(self.latency.items()):
            out.extend(hist.lines("attnsift_request_duration_seconds", {"endpoint": endpoint}))
        head("attnsift_queue_wait_seconds", "histogram", "Time a request waited in the queue before its batch ran.")
        out.extend(self.queue_wait.lines("attnsift_queue_wait_seconds", {}))
        head("attnsift_batch_size", "histogram", "Requests run on the model in one batch.")
        out.extend(self.batch_sizes.lines("attnsift_batch_size", {}))
        for name, (text, read) in sorted(self.gauges.items()):
            head(name, "gauge", text)
            out.append(f"{name} {_number(float(read()))}")
        return "\n".join(out) + "\n"


def parse(text: str) -> dict[str, float]:
    """``{sample with labels: value}`` from an exposition (for tests and the load benchmark)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        values[sample] = float(value)
    return values
