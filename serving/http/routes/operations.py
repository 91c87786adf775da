"""What operators and orchestrators ask: ``/health`` (200 once the model is loaded, 503 before or if loading
failed, with why; open without the API key), ``/ping`` (the same readiness as ``mlflow models serve`` answers it, for
SageMaker and MLflow's clients; open too), ``/version`` (the server's), ``/model/info`` (what is served and how:
dtype, device, what makes a step fast, batching, counters) and ``/metrics`` (Prometheus text: this process's
series, or in a fleet of replicas every replica's, labelled ``replica``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from core import __version__
from serving.http.metrics import exposition
from serving.http.schemas import Health, ModelInfo, errors, json_errors
from serving.http.state import Ready, State, authorized

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "not ready, and why"}})
async def health(state: State):
    if state.ready:
        return Health(status="ok", ready=True)
    body = Health(status="error" if state.error else "loading", ready=False, detail=state.error)
    return JSONResponse(body.model_dump(), status_code=503)


@router.get(
    "/ping",
    response_class=PlainTextResponse,
    responses={200: {"description": "the model is loaded"}, 503: {"description": "not ready: see /health for why"}},
)
async def ping(state: State) -> PlainTextResponse:
    return PlainTextResponse("\n", status_code=200 if state.ready else 503)


@router.get(
    "/version", response_class=PlainTextResponse, dependencies=[Depends(authorized)], responses=json_errors(401, 422)
)
async def version() -> str:
    return __version__


@router.get(
    "/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorized)], responses=json_errors(401, 422)
)
async def metrics(state: State) -> str:
    return exposition(await state.fleet() if state.fleet else state.families())


@router.get(
    "/model/info", response_model=ModelInfo, dependencies=[Depends(authorized)], responses=errors(401, 422, 503)
)
async def model_info(st: Ready) -> ModelInfo:
    spec, engine = st.spec, st.engine.describe()
    return ModelInfo(
        name=spec.name,
        version=spec.version,
        alias=spec.alias,
        run_id=spec.run_id,
        source_uri=spec.source_uri,
        folder=str(spec.folder),
        chat_format=engine["chat_format"],
        dtype=spec.dtype,
        device=engine["device"],
        acceleration=engine["acceleration"],
        dtype_agreement=st.agreement,
        parameters=engine["parameters"],
        generation_defaults=spec.generation,
        limits=dict(zip(("max_input_tokens", "context_window", "max_new_tokens_cap"), st.token_limit(), strict=True)),
        batching={
            "mode": "continuous (requests join and leave the batch at every decoding step)",
            **{k: engine[k] for k in ("shared_prefix_tokens", "prompt_cache", "max_batch_size", "max_wait_ms")},
            "max_queue": engine["max_queue"],
            "queue_depth": engine["queue_depth"],
        },
        stats=engine["stats"],
    )
