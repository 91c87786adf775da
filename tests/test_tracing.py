"""The server's trace export without a collector: what reaches the exporter, what is counted when it fails or the
queue is full, and what a refused request's trace says (serving.http.tracing)."""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace.export import SpanExportResult

from serving.http.settings import Settings
from serving.http.tracing import Tracing, refusal_reason


class Collector:
    """Stands in for the OTLP exporter: records batches; ``fail`` makes it refuse; ``hold`` keeps it busy."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list] = []
        self.fail = fail
        self.hold = threading.Event()
        self.hold.set()

    def export(self, spans):
        self.hold.wait(10)
        self.batches.append(list(spans))
        return SpanExportResult.FAILURE if self.fail else SpanExportResult.SUCCESS

    def shutdown(self) -> None: ...


def traced(collector: Collector, requests: int, content: bool = True) -> Tracing:
    tracing = Tracing("http://collector.invalid", "1", sample=1.0, content=content, exporter=collector)
    for i in range(requests):
        record = tracing.start("/ask", {})
        record.inputs({"question": f"question {i}"})
        record.end(200)
    return tracing


def test_spans_reach_the_exporter_in_batches_and_are_counted():
    collector = Collector()
    tracing = traced(collector, 5)
    assert tracing.processor.force_flush(5000)
    tracing.shutdown()
    assert sum(len(batch) for batch in collector.batches) == 5
    assert tracing.counts() == {"exported": 5, "failed": 0, "dropped": 0, "queued": 0}


def test_a_refusing_collector_is_counted_and_a_full_queue_drops_without_blocking():
    collector = Collector(fail=True)
    collector.hold.clear()  # the collector hangs: the queue fills behind it
    tracing = Tracing("http://collector.invalid", "1", sample=1.0, content=True, exporter=collector)
    tracing.processor.max_queue = 3
    for _ in range(10):
        tracing.start("/ask", {}).end(200)  # returns at once, whatever the collector does
    collector.hold.set()
    tracing.processor.force_flush(5000)
    tracing.shutdown()
    counts = tracing.counts()
    assert counts["dropped"] >= 6 and counts["failed"] + counts["dropped"] == 10 and counts["exported"] == 0


def test_a_traceparent_is_joined_and_an_unsampled_request_is_not_traced():
    tracing = Tracing("http://collector.invalid", "1", sample=1.0, content=True, exporter=Collector())
    caller = "0af7651916cd43dd8448eb211c80319c"
    record = tracing.start("/ask", {"traceparent": f"00-{caller}-b7ad6b7169203331-01"})
    assert record.trace_id == f"tr-{caller}"
    assert tracing.start("/ask", {"traceparent": f"00-{caller}-b7ad6b7169203331-00"}) is None  # the caller said no
    never = Tracing("http://collector.invalid", "1", sample=0.0, content=True, exporter=Collector())
    assert never.start("/ask", {}) is None
    tracing.shutdown()
    never.shutdown()


def test_a_refusal_reason_keeps_its_message_only_when_content_is_recorded():
    body = b'{"detail": [{"type": "string_too_long", "loc": ["body", "question"], "msg": "at most 100 characters"}]}'
    assert refusal_reason(body, content=True) == "string_too_long: at most 100 characters"
    assert refusal_reason(body, content=False) == "string_too_long"
    assert refusal_reason(b"not json", content=True) == "error"


def test_tracing_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "SERVING_TRACES_URL": "http://127.0.0.1:5050",
            "SERVING_TRACE_SAMPLE": "0.25",
            "SERVING_TRACE_CONTENT": "false",
        },
        model_uri="m",
    )
    assert (settings.traces_url, settings.trace_sample, settings.trace_content) == (
        "http://127.0.0.1:5050",
        0.25,
        False,
    )
