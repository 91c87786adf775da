"""Prometheus text exposition for ``GET /metrics`` (format 0.0.4), without a client library.

Series: serving_requests_total{path,status}, serving_request_duration_seconds (histogram per path),
serving_queue_depth, serving_running_requests, serving_decode_steps_total, serving_batch_size (histogram of the rows in
each decoding step), serving_rejected_total, serving_abandoned_total, serving_tokens_generated_total,
serving_prompt_tokens_total and serving_prompt_tokens_cached_total (those read from the prompt cache),
serving_generation_tokens_per_second; with traces on, serving_trace_spans_total{outcome=exported|failed|dropped} and
serving_trace_queue_spans. In a fleet of replicas (``serving.replicas``) every sample carries a ``replica`` label and
one ``/metrics`` holds every replica's series (``merged``).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, defaultdict

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += times
        self.total += value * times
        self.count += times

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.count}"]


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.latency: dict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))

    def record(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        self.latency[path].observe(seconds)

    def families(self, stats, queue_depth: int, traces: dict[str, int] | None = None, label: str = "") -> Families:
        """Every series, grouped by family; ``label`` (``replica="..."``) is added to each sample."""
        out: Families = []
        requests = [
            (f'path="{path}",status="{status}"', count) for (path, status), count in sorted(self.requests.items())
        ]
        out.append(family("serving_requests_total", "counter", requests, label))
        latency = [
            line
            for path, histogram in sorted(self.latency.items())
            for line in histogram.lines("serving_request_duration_seconds", joined(label, f'path="{path}"'))
        ]
        out.append(("serving_request_duration_seconds", "histogram", latency))
        batch_sizes = Histogram(BATCH_BUCKETS)
        for size, count in (stats.batch_sizes if stats else {}).items():
            batch_sizes.observe(size, count)
        out.append(("serving_batch_size", "histogram", batch_sizes.lines("serving_batch_size", label)))
        for name, kind, value in (
            ("serving_queue_depth", "gauge", queue_depth),
            ("serving_running_requests", "gauge", stats.running if stats else 0),
            ("serving_decode_steps_total", "counter", stats.steps if stats else 0),
            ("serving_rejected_total", "counter", stats.rejected if stats else 0),
            ("serving_abandoned_total", "counter", stats.abandoned if stats else 0),
            ("serving_tokens_generated_total", "counter", stats.tokens if stats else 0),
            ("serving_prompt_tokens_total", "counter", stats.prompt_tokens if stats else 0),
            ("serving_prompt_tokens_cached_total", "counter", stats.prompt_tokens_cached if stats else 0),
            ("serving_generation_tokens_per_second", "gauge", round(stats.tokens_per_s, 3) if stats else 0.0),
        ):
            out.append(family(name, kind, [("", value)], label))
        if traces is not None:  # spans of the answers' traces (serving.http.tracing): exported, failed, dropped; queued
            spans = [(f'outcome="{k}"', traces[k]) for k in ("exported", "failed", "dropped")]
            out.append(family("serving_trace_spans_total", "counter", spans, label))
            out.append(family("serving_trace_queue_spans", "gauge", [("", traces["queued"])], label))
        return out


Families = list[tuple[str, str, list[str]]]  # (name, type, sample lines)


def joined(*labels: str) -> str:
    return ",".join(label for label in labels if label)


def family(name: str, kind: str, samples: list[tuple[str, object]], label: str = "") -> tuple[str, str, list[str]]:
    """(name, kind, lines) from (labels, value) pairs, ``label`` first in each."""
    lines = []
    for labels, value in samples:
        both = joined(label, labels)
        lines.append(f"{name}{{{both}}} {value}" if both else f"{name} {value}")
    return name, kind, lines


def merged(*sources: Families) -> Families:
    """One family per name, holding the samples of every source (each source labelled apart, as a fleet's
    replicas are), in the order the names first appear: the text format wants a family's lines together."""
    order: dict[str, tuple[str, list[str]]] = {}
    for source in sources:
        for name, kind, lines in source:
            order.setdefault(name, (kind, []))[1].extend(lines)
    return [(name, kind, lines) for name, (kind, lines) in order.items()]


def exposition(families: Families) -> str:
    lines = []
    for name, kind, samples in families:
        lines += [f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Plain ASGI middleware recording each request's route, status and duration (unlike Starlette's
    BaseHTTPMiddleware it leaves ``receive`` alone, so handlers still see a client's disconnect)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.record(route.path if route else "unmatched", status, time.perf_counter() - started)
