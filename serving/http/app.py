"""The FastAPI application: ``create_app(settings)``.

HTTP contract (Swagger at /docs), one router per area (``serving.http.routes``):
- ``GET /health``: 200 {"ready": true} once the model is loaded, 503 before (or if loading failed, with why).
- ``POST /ask`` {question, max_new_tokens?, temperature?} -> {question, answer, tokens, latency_s, model_version}.
- ``POST /ask/batch`` {questions: [...], ...} -> {answers: [...]} in order; ``POST /ask/stream``: server-sent events.
- ``POST /invocations``: the MLflow scoring protocol (serving.http.protocol) -> {"predictions": [...]}.
- ``GET /model/info``: name, version, alias, run id, parameters, dtype, device, generation defaults, batching, counters.
- ``GET /metrics``: Prometheus text (requests, latency histogram, queue depth, batch sizes, tokens/s).
- ``GET /v1/models``, ``POST /v1/chat/completions`` (with ``stream``): OpenAI-compatible.
Requests are batched continuously (serving.engine, serving.engine.decoding): each joins the running batch at the next
decoding step and leaves it when done, its caller times out, or its client disconnects.
Bad input answers 4xx with what is allowed; a full queue 429 with Retry-After; a request past its timeout 504.
After SIGTERM the answers in flight have ``drain_s`` to finish; one still running then answers 503 ``stopping`` with
Retry-After (``DrainCutoff``), never a bare 500, so that a client or load balancer sends it again elsewhere.
/openapi.json is the exact contract (serving.http.schemas: strict bodies, the server's limits in them, every answer an
operation can give, one error shape); /docs shows it with Swagger UI served from this server (serving.http.docs).
With ``api_key`` set, every endpoint but /health needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The model loads in the lifespan, never at import time.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core import __version__
from serving.http.docs import add_docs, state_token_limit
from serving.http.metrics import MetricsMiddleware
from serving.http.requests import Refused
from serving.http.routes import ask, feedback, invocations, operations, v1
from serving.http.schemas import PROMPTED, ErrorBody, ErrorItem, request_models
from serving.http.settings import Settings
from serving.http.state import ServingState, authorized
from serving.http.tracing import TracingMiddleware

ERROR_TYPES = {
    400: "invalid_body",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
    422: "value_error",
    429: "busy",
    499: "client_disconnected",
    503: "not_ready",
    504: "timeout",
}


async def error_body(request: Request, exc: HTTPException) -> JSONResponse:
    """An HTTPException's text in the one error shape every 4xx has (serving.http.schemas.ErrorBody); a ``Refused``
    names its own type and where in the body."""
    if isinstance(exc, Refused):
        item = ErrorItem(loc=exc.loc, msg=str(exc.detail), type=exc.type)
    else:
        item = ErrorItem(loc=["request"], msg=str(exc.detail), type=ERROR_TYPES.get(exc.status_code, "error"))
    return JSONResponse(ErrorBody(detail=[item]).model_dump(), status_code=exc.status_code, headers=exc.headers)


STOPPING = "stopping"


class DrainCutoff:
    """The outermost ASGI layer. When the drain time after SIGTERM is over, uvicorn cancels the requests still
    running, and its own answer to them is a plain-text 500; a request cancelled before its response started answers
    503 ``stopping`` with Retry-After instead. (A stream already started just ends: its status was sent.)"""

    def __init__(self, app, drain_s: float) -> None:
        self.app, self.drain_s = app, drain_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if started:
                raise
            msg = (
                f"the server stopped before this answer was finished: the {self.drain_s:g} s it gives answers in "
                "flight after SIGTERM (SERVING_DRAIN_S) ran out; send it again"
            )
            body = ErrorBody(detail=[ErrorItem(loc=["request"], msg=msg, type=STOPPING)]).model_dump()
            await JSONResponse(body, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)


def create_app(settings: Settings, state: ServingState | None = None) -> FastAPI:
    """The app for ``settings``. Its model loads in the lifespan, while the app already answers (/health 503 until it
    is loaded), unless ``state`` comes loaded (a Ray Serve replica loads first, so that a model that cannot load
    fails the replica with the reason)."""
    state = state or ServingState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(state.load()) if not state.ready else None
        yield
        if loading:
            loading.cancel()
        if state.engine:
            await state.engine.stop()
        if state.tracing:
            await asyncio.to_thread(state.tracing.shutdown)  # what is still queued is sent, for at most 10 s

    app = FastAPI(
        title="LLM lifecycle server",
        description="Serves a model registered by the lifecycle (or an exported model folder), with dynamic batching.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by serving.http.docs, without a CDN
        redoc_url=None,
    )
    add_docs(app)
    state_token_limit(app, state.token_limit)
    app.add_exception_handler(HTTPException, error_body)
    app.state.serving = state
    protected = [Depends(authorized)]
    app.include_router(operations.router)  # /health is open; the others there check the key themselves
    models = request_models(settings)
    for area in (ask, invocations, v1):
        app.include_router(area.build(models), dependencies=protected)
    if settings.traces_url:  # feedback names a trace: offered where answers have traces
        app.include_router(feedback.router, dependencies=protected)
    app.add_middleware(invocations.CsvBody)  # text/csv on /invocations, as mlflow models serve reads it
    app.add_middleware(TracingMiddleware, tracing=lambda: state.tracing, paths=PROMPTED)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(DrainCutoff, drain_s=settings.drain_s)
    return app
