"""The FastAPI application: ``create_app(settings)``.

HTTP contract (Swagger at /docs):
- ``GET /health``: 200 {"ready": true} once the model is loaded, 503 before (or if loading failed, with why).
- ``POST /ask`` {question, max_new_tokens?, temperature?} -> {question, answer, tokens, latency_s, model_version}.
- ``POST /ask/batch`` {questions: [...], ...} -> {answers: [...]} in order.
- ``POST /invocations``: the MLflow scoring protocol (serving.protocol) -> {"predictions": [...]}.
- ``GET /model/info``: name, version, alias, run id, parameters, dtype, device, generation defaults, batching, counters.
- ``GET /metrics``: Prometheus text (requests, latency histogram, queue depth, batch sizes, tokens/s).
Bad input answers 4xx with what is allowed; a full queue 429 with Retry-After; a request past its timeout 504.
With ``api_key`` set, every endpoint but /health needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse

from lifecycle.generation import merge_settings
from serving import protocol
from serving.engine import Batcher, Generator, Overloaded
from serving.metrics import Metrics
from serving.schemas import AskRequest, AskResponse, BatchRequest, BatchResponse, Health, ModelInfo, Predictions
from serving.settings import Settings

log = logging.getLogger(__name__)


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = None
        self.loaded = None
        self.generator: Generator | None = None
        self.batcher: Batcher | None = None
        self.error: str | None = None
        self.metrics = Metrics()

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def _load_blocking(self):
        from lifecycle.integrations.models import load_model
        from serving.loader import resolve

        spec = resolve(self.settings.model_uri)
        loaded = load_model(spec.folder, spec.chat_format or "plain", spec.dtype, spec.threads)
        if spec.chat_format is None and loaded.tokenizer.chat_template:
            loaded.chat_format = "chat_template"
        return spec, loaded

    async def load(self) -> None:
        started = time.perf_counter()
        try:
            self.spec, self.loaded = await asyncio.to_thread(self._load_blocking)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.settings.model_uri, self.error)
            return
        self.generator = generator = Generator(self.loaded, self.spec.system, self.spec.template)
        s = self.settings
        batcher = Batcher(generator.generate, s.max_batch_size, s.max_wait_ms, s.max_queue)
        batcher.start()
        self.batcher = batcher
        log.info("model %s ready in %.1f s", self.settings.model_uri, time.perf_counter() - started)


def _settings_for(state: ServingState, overrides: dict[str, Any]) -> dict[str, Any]:
    cap = state.settings.max_new_tokens_cap
    if (overrides.get("max_new_tokens") or 0) > cap:
        raise HTTPException(422, f"max_new_tokens must be at most {cap}")
    try:
        return merge_settings(state.spec.generation, overrides)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _check_questions(state: ServingState, questions: list[str]) -> list[str]:
    s = state.settings
    if len(questions) > s.max_batch_questions:
        raise HTTPException(422, f"at most {s.max_batch_questions} questions per request, got {len(questions)}")
    cleaned = []
    for question in questions:
        if not isinstance(question, str) or not question.strip():
            raise HTTPException(422, "every question must be a non-empty string")
        if len(question) > s.max_question_chars:
            raise HTTPException(422, f"a question may have at most {s.max_question_chars} characters")
        cleaned.append(question.strip())
    return cleaned


async def _answer(state: ServingState, question: str, settings: dict[str, Any]) -> AskResponse:
    started = time.perf_counter()
    prompt = state.generator.render(question)
    try:
        out = await asyncio.wait_for(state.batcher.submit(prompt, settings), state.settings.request_timeout_s)
    except Overloaded as exc:
        raise HTTPException(429, f"server busy: {exc}; retry shortly", headers={"Retry-After": "1"}) from None
    except TimeoutError:
        raise HTTPException(504, f"no answer within {state.settings.request_timeout_s} s") from None
    return AskResponse(
        question=question,
        answer=out.text,
        tokens=out.tokens,
        latency_s=time.perf_counter() - started,
        model_version=state.spec.version,
    )


async def _answer_all(state: ServingState, questions: list[str], overrides: dict[str, Any]) -> list[AskResponse]:
    settings = _settings_for(state, overrides)
    tasks = [asyncio.ensure_future(_answer(state, q, settings)) for q in _check_questions(state, questions)]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()  # one failed: free the others' slots


def serving_state(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(serving_state)]


async def authorized(
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    key = state.settings.api_key
    if key is None:
        return
    given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
    if given != key.get_secret_value():
        raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")


async def ready_state(state: State) -> ServingState:
    if not state.ready:
        raise HTTPException(503, f"model not loaded: {state.error or 'loading'}", headers={"Retry-After": "5"})
    return state


Ready = Annotated[ServingState, Depends(ready_state)]


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
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    protected = [Depends(authorized)]

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        state.metrics.record(path, response.status_code, time.perf_counter() - started)
        return response

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
    async def ask(body: AskRequest, st: Ready) -> AskResponse:
        overrides = body.model_dump(exclude={"question"})
        return (await _answer_all(st, [body.question], overrides))[0]

    @app.post("/ask/batch", response_model=BatchResponse, dependencies=protected)
    async def ask_batch(body: BatchRequest, st: Ready) -> BatchResponse:
        return BatchResponse(answers=await _answer_all(st, body.questions, body.model_dump(exclude={"questions"})))

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
        answers = await _answer_all(st, questions, params)
        return Predictions(predictions=[a.answer for a in answers])

    @app.get("/model/info", response_model=ModelInfo, dependencies=protected)
    async def model_info(st: Ready) -> ModelInfo:
        spec, model, s = st.spec, st.loaded.model, st.settings
        return ModelInfo(
            name=spec.name,
            version=spec.version,
            alias=spec.alias,
            run_id=spec.run_id,
            source_uri=spec.source_uri,
            folder=str(spec.folder),
            chat_format=st.loaded.chat_format,
            dtype=str(model.dtype).removeprefix("torch."),
            device=str(model.device),
            parameters=sum(p.numel() for p in model.parameters()),
            generation_defaults=spec.generation,
            batching={
                "max_batch_size": s.max_batch_size,
                "max_wait_ms": s.max_wait_ms,
                "max_queue": s.max_queue,
                "queue_depth": st.batcher.queue_depth,
            },
            stats=st.batcher.stats.as_dict(),
        )

    return app
