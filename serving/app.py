"""The FastAPI application: ``create_app(settings)``.

HTTP contract (Swagger at /docs), one router per area (``serving.routes``):
- ``GET /health``: 200 {"ready": true} once the model is loaded, 503 before (or if loading failed, with why).
- ``POST /ask`` {question, max_new_tokens?, temperature?} -> {question, answer, tokens, latency_s, model_version}.
- ``POST /ask/batch`` {questions: [...], ...} -> {answers: [...]} in order; ``POST /ask/stream``: server-sent events.
- ``POST /invocations``: the MLflow scoring protocol (serving.protocol) -> {"predictions": [...]}.
- ``GET /model/info``: name, version, alias, run id, parameters, dtype, device, generation defaults, batching, counters.
- ``GET /metrics``: Prometheus text (requests, latency histogram, queue depth, batch sizes, tokens/s).
- ``GET /v1/models``, ``POST /v1/chat/completions`` (with ``stream``): OpenAI-compatible.
Requests are batched continuously (serving.engine, serving.decoding): each joins the running batch at the next
decoding step and leaves it when done, its caller times out, or its client disconnects.
Bad input answers 4xx with what is allowed; a full queue 429 with Retry-After; a request past its timeout 504.
With ``api_key`` set, every endpoint but /health needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The model loads in the lifespan, never at import time.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.metrics import MetricsMiddleware
from serving.routes import ask, invocations, operations, v1
from serving.settings import Settings
from serving.state import ServingState, authorized


def create_app(settings: Settings) -> FastAPI:
    state = ServingState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(state.load())
        yield
        loading.cancel()
        if state.batcher:
            await state.batcher.stop()

    app = FastAPI(
        title="LLM lifecycle server",
        description="Serves a model registered by the lifecycle (or an exported model folder), with dynamic batching.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.serving = state
    protected = [Depends(authorized)]
    app.include_router(operations.router)  # /health is open; the others there check the key themselves
    for area in (ask, invocations, v1):
        app.include_router(area.router, dependencies=protected)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    return app
