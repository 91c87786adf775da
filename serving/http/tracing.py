"""A trace of every served answer, exported through OpenTelemetry to an MLflow tracking server (or any OTLP/HTTP
collector), batched and off the request path. The server imports no MLflow: MLflow reads the spans it is sent.

With ``traces_url`` (``SERVING_TRACES_URL``, ``--traces-url``) and an experiment (``traces_experiment_id``; for a
``models:/`` URI, by default the experiment of the run that logged the model), each request to an operation that
reads a prompt (``/ask``, ``/ask/batch``, ``/ask/stream``, ``/invocations``, ``/v1/chat/completions``) is one trace:

- its root span carries what a reader of the MLflow UI looks for: the question or messages as ``mlflow.spanInputs``,
  the answer as ``mlflow.spanOutputs``, the route and HTTP status, the model's name, version and alias and the
  prompt's name and version (also as trace tags, ``mlflow.traceTag.<key>``, so traces can be searched by them), the
  generation settings and token counts under OpenTelemetry's GenAI names (``gen_ai.*``), and the queue wait, time to
  first token, decode time and finish reason. A batch's questions are child spans of it, one per question;
- a refused request (4xx) is a trace with an error status and its reason; a caller's W3C ``traceparent`` is honoured,
  so our spans join its trace; each traced answer names its trace in the ``X-Trace-Id`` header (MLflow's id,
  ``tr-<hex>``), and ``/ask`` answers in their body too, so feedback can name it;
- ``trace_sample`` (0..1) keeps that share of traces; ``trace_content=false`` records no question, message or answer
  text (metadata only). Headers are never recorded, so neither is an API key or an ``Authorization`` header.

Export never fails or slows a request: finished spans go to a bounded queue that one thread drains in batches; when a
collector is down, slow or refusing, batches fail, the queue fills and new spans are dropped, and ``/metrics`` counts
the exported, failed, dropped and queued spans.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from core import telemetry as names

log = logging.getLogger(__name__)

OTLP_PATH = "/v1/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
TRACE_ID_HEADER = "X-Trace-Id"
CONTENT_OFF = "not recorded (SERVING_TRACE_CONTENT=false)"
TAG = "mlflow.traceTag."  # a root span attribute MLflow makes a trace tag of

_current: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("request_trace", default=None)


def current() -> RequestTrace | NoTrace:
    """The trace of the request being handled, or a stand-in that records nothing."""
    return _current.get() or NO_TRACE


@dataclass
class Served:
    """What every trace says of the model being served."""

    model_id: str
    name: str | None
    version: str | None
    alias: str | None
    prompt_name: str | None
    prompt_version: str | None

    def tags(self) -> dict[str, str]:
        pairs = {
            names.MODEL_NAME: self.name,
            names.MODEL_VERSION: self.version,
            names.MODEL_ALIAS: self.alias,
            names.PROMPT_NAME: self.prompt_name,
            names.PROMPT_VERSION: self.prompt_version,
        }
        return {key: str(value) for key, value in pairs.items() if value is not None}


@dataclass
class Answer:
    """One generated answer of a request (a question of a batch, or the request's only one)."""

    inputs: Any
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    queued_ns: int
    admitted_ns: int | None
    first_token_ns: int | None
    finished_ns: int


@dataclass
class ExportCounts:
    exported: int = 0
    failed: int = 0
    dropped: int = 0

    def as_dict(self, queued: int) -> dict[str, int]:
        return {"exported": self.exported, "failed": self.failed, "dropped": self.dropped, "queued": queued}


class NoTrace:
    """A request that is not traced: every call does nothing."""

    trace_id: str | None = None

    def inputs(self, value: Any) -> None: ...

    def outputs(self, value: Any) -> None: ...

    def settings(self, settings: Mapping[str, Any], model: str | None = None) -> None: ...

    def answer(self, inputs: Any, seq: Any, text: str) -> None: ...

    def refused(self, reason: str) -> None: ...


NO_TRACE = NoTrace()


@dataclass
class RequestTrace:
    """One request's trace while it is handled: the routes say what it asked and got; it ends with the response."""

    span: Any  # opentelemetry.trace.Span, the root span
    tracer: Any
    content: bool
    answers: list[Answer] = field(default_factory=list)
    reason: str | None = None

    @property
    def trace_id(self) -> str:
        """MLflow's id of this trace: ``tr-`` and the W3C trace id in hex."""
        return f"tr-{self.span.get_span_context().trace_id:032x}"

    def inputs(self, value: Any) -> None:
        self.span.set_attribute("mlflow.spanInputs", _json(value if self.content else CONTENT_OFF))

    def outputs(self, value: Any) -> None:
        self.span.set_attribute("mlflow.spanOutputs", _json(value if self.content else CONTENT_OFF))

    def settings(self, settings: Mapping[str, Any], model: str | None = None) -> None:
        """The generation settings used, under OpenTelemetry's GenAI names where they exist."""
        self.span.set_attributes(names.generation_attributes(settings))

    def answer(self, inputs: Any, seq: Any, text: str) -> None:
        """A generated answer (``serving.engine.Sequence``, finished) and the text it decoded to."""
        self.answers.append(
            Answer(
                inputs=inputs,
                text=text,
                prompt_tokens=len(seq.prompt_ids),
                completion_tokens=len(seq.tokens),
                finish_reason=seq.finish_reason,
                queued_ns=seq.queued_ns or time.time_ns(),
                admitted_ns=seq.admitted_ns,
                first_token_ns=seq.first_token_ns,
                finished_ns=seq.finished_ns or time.time_ns(),
            )
        )

    def refused(self, reason: str) -> None:
        self.reason = reason

    def end(self, status: int) -> None:
        """Close the root span: its answers' counts and timings, its status; a batch's answers as child spans."""
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        span.set_attribute("http.response.status_code", status)
        span.set_attribute(TAG + names.HTTP_STATUS, str(status))
        _usage(span, self.answers)
        if len(self.answers) == 1:
            _timings(span, self.answers[0])
        elif len(self.answers) > 1:
            self._children()
        if status >= 400 or self.reason:
            span.set_status(Status(StatusCode.ERROR, self.reason or f"HTTP {status}"))
        span.end()

    def _children(self) -> None:
        from opentelemetry import trace

        parent = trace.set_span_in_context(self.span)
        for index, answer in enumerate(self.answers):
            child = self.tracer.start_span(f"answer {index}", context=parent, start_time=answer.queued_ns)
            child.set_attribute("mlflow.spanType", "LLM")
            child.set_attribute("mlflow.spanInputs", _json(answer.inputs if self.content else CONTENT_OFF))
            child.set_attribute("mlflow.spanOutputs", _json(answer.text if self.content else CONTENT_OFF))
            _usage(child, [answer])
            _timings(child, answer)
            child.end(end_time=answer.finished_ns)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _usage(span: Any, answers: Iterable[Answer]) -> None:
    answers = list(answers)
    if not answers:
        return
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    span.set_attribute(names.INPUT_TOKENS, prompt)
    span.set_attribute(names.OUTPUT_TOKENS, completion)
    span.set_attribute(
        "mlflow.chat.tokenUsage",
        _json({"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}),
    )
    span.set_attribute("gen_ai.response.finish_reasons", [a.finish_reason or "unknown" for a in answers])


def _timings(span: Any, answer: Answer) -> None:
    """Queue wait (queued until admitted into the batch), time to first token and decode time, in seconds."""
    if answer.admitted_ns is not None:
        span.set_attribute(names.QUEUE_WAIT_S, (answer.admitted_ns - answer.queued_ns) / 1e9)
    if answer.first_token_ns is not None:
        span.set_attribute(names.TIME_TO_FIRST_TOKEN_S, (answer.first_token_ns - answer.queued_ns) / 1e9)
        span.set_attribute(names.DECODE_S, (answer.finished_ns - answer.first_token_ns) / 1e9)


class QueuedExport(SpanProcessor):
    """An OpenTelemetry span processor: finished spans into a bounded queue, drained by one thread in batches of at
    most ``batch`` every ``delay_s``; a full queue drops the span and counts it. Nothing here blocks a request."""

    def __init__(self, exporter: Any, max_queue: int = 2048, batch: int = 256, delay_s: float = 1.0) -> None:
        self.exporter = exporter
        self.max_queue, self.batch, self.delay_s = max_queue, batch, delay_s
        self.counts = ExportCounts()
        self._queue: deque = deque()
        self._sending = 0  # spans taken off the queue whose export has not ended yet
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._drain, name="trace-export", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_end(self, span: Any) -> None:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self.counts.dropped += 1
                return
            self._queue.append(span)
            if len(self._queue) >= self.batch:
                self._cond.notify()

    def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and len(self._queue) < self.batch:
                    self._cond.wait(self.delay_s)
                spans = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                self._sending = len(spans)
                stopping = self._stopping
            if spans:
                self._export(spans)
            elif stopping:
                return

    def _export(self, spans: list) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            ok = self.exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception:  # a collector's failure is counted, never raised into the server
            log.debug("trace export failed", exc_info=True)
            ok = False
        with self._cond:
            if ok:
                self.counts.exported += len(spans)
            else:
                self.counts.failed += len(spans)
            self._sending = 0
            self._cond.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued now, and wait (at most ``timeout_millis``) until it has been sent."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._cond.notify_all()  # the drain thread sends at once instead of at its next tick
            while (self._queue or self._sending) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, self.delay_s))
            return not (self._queue or self._sending)

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)
        self.exporter.shutdown()


class Tracing:
    """The server's tracer: spans for traced requests, exported by ``QueuedExport``."""

    def __init__(self, url: str, experiment_id: str, sample: float, content: bool, exporter: Any = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            from serving.http.feedback import auth_headers

            headers = {EXPERIMENT_HEADER: experiment_id, **auth_headers()}  # a tracking server's own credentials
            exporter = OTLPSpanExporter(endpoint=url.rstrip("/") + OTLP_PATH, headers=headers, timeout=5)
        self.url, self.experiment_id, self.content = url, experiment_id, content
        self.processor = QueuedExport(exporter)
        resource = Resource.create({"service.name": "llm-lifecycle-server"})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample)))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("serving")
        self.served: Served | None = None

    def start(self, route: str, headers: Mapping[str, str]) -> RequestTrace | None:
        """The root span of a request to ``route`` (in the caller's trace when its ``traceparent`` says so), or None
        when it is not sampled."""
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract({k: v for k, v in headers.items() if k == "traceparent"})
        span = self.tracer.start_span(f"POST {route}", context=parent, kind=SpanKind.SERVER)
        if not span.is_recording():
            span.end()
            return None
        span.set_attribute("mlflow.spanType", "LLM")
        span.set_attribute("http.route", route)
        span.set_attribute("http.request.method", "POST")
        span.set_attribute("gen_ai.operation.name", "chat" if route.startswith("/v1/") else "text_completion")
        span.set_attribute(TAG + names.ROUTE, route)
        if self.served is not None:
            span.set_attribute("gen_ai.request.model", self.served.model_id)
            span.set_attribute("gen_ai.response.model", self.served.model_id)
            for key, value in self.served.tags().items():
                span.set_attribute(key, value)
                span.set_attribute(TAG + key, value)
        return RequestTrace(span, self.tracer, self.content)

    def counts(self) -> dict[str, int]:
        return self.processor.counts.as_dict(self.processor.queued)

    def shutdown(self) -> None:
        self.provider.shutdown()


class TracingMiddleware:
    """Pure ASGI middleware: a root span for each request to ``paths``, its trace id in the response's
    ``X-Trace-Id`` header, ended when the response (a stream too) has been sent."""

    def __init__(self, app: Any, tracing: Callable[[], Tracing | None], paths: Iterable[str]) -> None:
        self.app, self.tracing, self.paths = app, tracing, frozenset(paths)

    async def __call__(self, scope, receive, send) -> None:
        tracing = self.tracing()
        if tracing is None or scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        record = _guarded(tracing.start, scope["path"], _headers(scope))
        if record is None:
            await self.app(scope, receive, send)
            return
        token = _current.set(record)
        status = 500
        error_body = bytearray()

        async def traced_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), _header(record.trace_id)]}
            elif message["type"] == "http.response.body" and status >= 400:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        finally:
            _current.reset(token)
            if status >= 400 and record.reason is None:
                record.refused(refusal_reason(bytes(error_body), tracing.content))
            _guarded(record.end, status)


def _guarded(call: Callable, *args: Any) -> Any:
    """``call(*args)``, or None if it raises: a trace that cannot be made never fails the request it describes."""
    try:
        return call(*args)
    except Exception:
        log.warning("tracing failed; the request goes on untraced", exc_info=True)
        return None


def _headers(scope) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


def _header(trace_id: str) -> tuple[bytes, bytes]:
    return TRACE_ID_HEADER.lower().encode(), trace_id.encode()


def refusal_reason(body: bytes, content: bool) -> str:
    """An error answer's reason: each detail's type and message (only the types when content is not recorded: a
    message may quote the input)."""
    try:
        detail = json.loads(body)["detail"]
        items = [(item.get("type", "error"), item.get("msg", "")) for item in detail]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "error"
    return "; ".join(f"{kind}: {msg}" if content else kind for kind, msg in items) or "error"
