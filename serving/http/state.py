"""The server's state and how it gets there: the engine loaded on its own thread, the bfloat16 agreement it measures
while idle, the trace exporter; and the FastAPI dependencies every route takes (``State``, ``Ready``,
``authorized``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from serving.engine import Engine, EngineOptions
from serving.http.metrics import Families, Metrics
from serving.http.settings import Settings

log = logging.getLogger(__name__)


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None  # once loaded: the server is ready
        self.error: str | None = None
        self.agreement: dict[str, Any] | None = None  # bfloat16 or int8 against float32, when serving either
        self.metrics = Metrics()
        self.tracing = None  # serving.http.tracing.Tracing, once loaded, when settings.traces_url is set
        self.loaded_at = 0
        self.on_failure = lambda: None  # called once loading failed (python -m serving stops the server then)
        self.fleet: Callable[[], Awaitable[Families]] | None = None  # every replica's series (serving.replicas)

    @property
    def spec(self):
        return self.engine.spec if self.engine else None

    @property
    def model_id(self) -> str:
        return model_id(self.spec)

    @property
    def ready(self) -> bool:
        return self.engine is not None

    def families(self, label: str = "") -> Families:
        """This process's series for ``/metrics``, each with ``label`` (a replica's, in a fleet) when given."""
        engine, tracing = self.engine, self.tracing
        stats, depth = (engine.stats, engine.queue_depth) if engine else (None, 0)
        return self.metrics.families(stats, depth, tracing.counts() if tracing else None, label)

    def token_limit(self) -> tuple[int | None, int | None, int]:
        """(the prompt tokens a request may bring, the model's context, the max_new_tokens cap); the first two are
        None until the model has loaded."""
        cap = self.settings.max_new_tokens_cap
        return (*self.engine.limits, cap) if self.engine else (None, None, cap)

    def options(self) -> EngineOptions:
        s = self.settings
        return EngineOptions(
            s.model_uri,
            s.batch_size_for,
            s.max_wait_ms,
            s.max_queue,
            s.dtype,
            s.device,
            s.max_input_tokens,
            s.prompt_cache_mb,
        )

    async def load(self) -> None:
        """Load the model on the thread that will then run the engine: one thread does all of the model's work
        (``serving.engine.engine``)."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future = loop.create_future()
        threading.Thread(target=self._own_the_model, args=(loop, outcome), name="generate", daemon=True).start()
        try:
            engine = await outcome
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.settings.model_uri, self.error)
            self.on_failure()
            return
        try:
            self.tracing = self._tracing(engine.spec)
        except ValueError as exc:
            self.error = str(exc)
            log.error("%s", self.error)
            engine.request_stop()
            self.on_failure()
            return
        self.agreement = {"reference": "float32", "status": "measuring while idle"}  # before the result can come
        if not engine.measure_agreement(self._agreement_measured):
            self.agreement = None  # float32, or no questions to compare on
        self.loaded_at = int(time.time())
        self.engine = engine
        log.info("model %s ready in %.1f s", self.settings.model_uri, time.perf_counter() - started)

    def _agreement_measured(self, result: dict[str, Any]) -> None:
        self.agreement = result
        dtype = self.spec.dtype if self.spec else "the served dtype"
        log.info("%s against float32 on the evaluation questions: %s", dtype, result)

    def _tracing(self, spec):
        """The exporter of this server's traces, when ``traces_url`` is set; ValueError without an experiment."""
        s = self.settings
        if not s.traces_url:
            return None
        experiment = s.traces_experiment_id or spec.experiment_id
        if not experiment:
            raise ValueError(
                f"traces go to {s.traces_url}, but to no experiment: {s.model_uri} names none (a models:/ URI names "
                "the experiment of the run that logged it); set SERVING_TRACES_EXPERIMENT_ID"
            )
        from serving.http.tracing import Served, Tracing

        tracing = Tracing(s.traces_url, experiment, s.trace_sample, s.trace_content)
        served = (spec.name, spec.version, spec.alias, spec.prompt_name, spec.prompt_version)
        tracing.served = Served(model_id(spec), *served)
        log.info("tracing every answer into experiment %s at %s", experiment, s.traces_url)
        return tracing

    def _own_the_model(self, loop: asyncio.AbstractEventLoop, outcome: asyncio.Future) -> None:
        def settle(result) -> None:
            if outcome.done():  # the server stopped while loading: nobody will use this engine
                if isinstance(result, Engine):
                    result.request_stop()
                return
            (outcome.set_exception if isinstance(result, BaseException) else outcome.set_result)(result)

        try:
            engine = Engine.load(self.options())
        except Exception as exc:
            loop.call_soon_threadsafe(settle, exc)
            return
        loop.call_soon_threadsafe(settle, engine)
        engine.serve_here()


def model_id(spec) -> str:
    """The id clients see (/v1/models, traces): ``name:version`` for a registered model, else its name."""
    return f"{spec.name}:{spec.version}" if spec and spec.version else (spec.name if spec else "model")


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
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):  # in constant time
        raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")


async def ready_state(state: State) -> ServingState:
    if not state.ready:
        raise HTTPException(503, f"model not loaded: {state.error or 'loading'}", headers={"Retry-After": "5"})
    return state


Ready = Annotated[ServingState, Depends(ready_state)]
