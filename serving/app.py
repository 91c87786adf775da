"""The FastAPI application: ``create_app(settings)``.

HTTP contract (Swagger at /docs):
- ``GET /health``: 200 {"ready": true} once the model is loaded, 503 before (or if loading failed, with why).
- ``POST /ask`` {question, max_new_tokens?, temperature?} -> {question, answer, tokens, latency_s, model_version}.
- ``POST /ask/batch`` {questions: [...], ...} -> {answers: [...]} in order.
- ``POST /invocations``: the MLflow scoring protocol (serving.protocol) -> {"predictions": [...]}.
- ``GET /model/info``: name, version, alias, run id, parameters, dtype, device, generation defaults, batching, counters.
- ``GET /metrics``: Prometheus text (requests, latency histogram, queue depth, batch sizes, tokens/s).
- ``GET /v1/models``, ``POST /v1/chat/completions`` (with ``stream``), ``POST /ask/stream``: serving.openai_routes.
Requests are batched continuously (serving.engine, serving.decoding): each joins the running batch at the next
decoding step and leaves it when done, its caller times out, or its client disconnects.
Bad input answers 4xx with what is allowed; a full queue 429 with Retry-After; a request past its timeout 504.
With ``api_key`` set, every endpoint but /health needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse

from serving import protocol
from serving.app_state import Ready, ServingState, answer_all, authorized
from serving.metrics import MetricsMiddleware
from serving.openai_routes import router as openai_router
from serving.schemas import AskRequest, AskResponse, BatchRequest, BatchResponse, Health, ModelInfo, Predictions
from serving.settings import Settings


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
    app.include_router(openai_router, dependencies=[Depends(authorized)])
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    protected = [Depends(authorized)]

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=protected)
    async def metrics() -> str:
        batcher = state.batcher
        return state.metrics.render(batcher.stats if batcher else None, batcher.queue_depth if batcher else 0)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health():
        if state.ready:
            return Health(status="ok", ready=True)
        body = Health(status="error" if state.error else "loading", ready=False, detail=state.error)
        return JSONResponse(body.model_dump(), status_code=503)

    @app.post("/ask", response_model=AskResponse, dependencies=protected)
    async def ask(body: AskRequest, st: Ready, request: Request) -> AskResponse:
        overrides = body.model_dump(exclude={"question"})
        return (await answer_all(st, [body.question], overrides, request))[0]

    @app.post("/ask/batch", response_model=BatchResponse, dependencies=protected)
    async def ask_batch(body: BatchRequest, st: Ready, request: Request) -> BatchResponse:
        overrides = body.model_dump(exclude={"questions"})
        return BatchResponse(answers=await answer_all(st, body.questions, overrides, request))

    @app.post(
        "/invocations",
        response_model=Predictions,
        dependencies=protected,
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {
                        "example": {
                            "dataframe_split": {"columns": ["question"], "data": [["What is Python?"]]},
                            "params": {"max_new_tokens": 32},
                        }
                    }
                }
            }
        },
    )
    async def invocations(request: Request, st: Ready) -> Predictions:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise HTTPException(415, f"Content-Type must be application/json, got {content_type or 'none'}")
        try:
            payload = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"malformed JSON: {exc}") from None
        try:
            questions, params = protocol.parse_invocation(payload)
        except protocol.ProtocolError as exc:
            raise HTTPException(400, str(exc)) from None
        answers = await answer_all(st, questions, params, request)
        return Predictions(predictions=[a.answer for a in answers])

    @app.get("/model/info", response_model=ModelInfo, dependencies=protected)
    async def model_info(st: Ready) -> ModelInfo:
        from serving import kernels  # torch: loaded by now, but not at import time

        spec, model, batch = st.spec, st.loaded.model, st.batcher.batch
        graphs = batch.graphs.captured if batch.graphs and batch.graphs.capture else []
        return ModelInfo(
            name=spec.name,
            version=spec.version,
            alias=spec.alias,
            run_id=spec.run_id,
            source_uri=spec.source_uri,
            folder=str(spec.folder),
            chat_format=st.loaded.chat_format,
            dtype=spec.dtype,
            device=str(model.device),
            acceleration=kernels.describe(model) + ([f"CUDA graphs for {len(graphs)} batch shapes"] if graphs else []),
            dtype_agreement=st.agreement,
            parameters=kernels.parameters(model),
            generation_defaults=spec.generation,
            batching={
                "mode": "continuous (requests join and leave the batch at every decoding step)",
                "shared_prefix_tokens": [len(ids) for ids, _ in batch.prefixes],
                "max_batch_size": st.batcher.max_batch_size,
                "max_wait_ms": st.settings.max_wait_ms,
                "max_queue": st.settings.max_queue,
                "queue_depth": st.batcher.queue_depth,
            },
            stats=st.batcher.stats.as_dict(),
        )

    return app
