"""The server's state and how it gets there: the model loaded on its own thread, the batcher, the bfloat16
agreement measured while idle; and the FastAPI dependencies every route takes (``State``, ``Ready``,
``authorized``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from serving.engine import Batcher
from serving.engine.prompting import Prompter
from serving.http.metrics import Metrics
from serving.http.settings import Settings

if TYPE_CHECKING:
    from serving.engine.decoding import DecodeBatch

log = logging.getLogger(__name__)


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = None
        self.loaded = None
        self.prompter: Prompter | None = None
        self.batcher: Batcher | None = None
        self.grammars = None  # serving.engine.structured.Grammars: response_format for this model's tokenizer
        self.error: str | None = None
        self.agreement: dict[str, Any] | None = None  # bfloat16 against float32, when serving bfloat16
        self.reference = None  # the float32 model that agreement is measured against, until it has answered
        self.metrics = Metrics()
        self.tracing = None  # serving.http.tracing.Tracing, once loaded, when settings.traces_url is set
        self.loaded_at = 0
        self.on_failure = lambda: None  # called once loading failed (python -m serving stops the server then)

    @property
    def model_id(self) -> str:
        spec = self.spec
        return f"{spec.name}:{spec.version}" if spec and spec.version else (spec.name if spec else "model")

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def token_limit(self) -> tuple[int | None, int | None, int]:
        """(the prompt tokens a request may bring, the model's context, the max_new_tokens cap); the first two are
        None until the model has loaded."""
        prompter, cap = self.prompter, self.settings.max_new_tokens_cap
        return (prompter.max_input_tokens, prompter.context, cap) if prompter else (None, None, cap)

    def _load_blocking(self) -> tuple[Any, Any, Prompter, DecodeBatch]:
        from serving.engine.decoding import DecodeBatch
        from serving.engine.loader import load, resolved

        s = self.settings
        with resolved(s.model_uri) as spec:
            limit = min(s.max_input_tokens or spec.max_input_tokens, spec.max_input_tokens)  # the setting only lowers
            spec = replace(spec, dtype=s.dtype or spec.dtype, max_input_tokens=limit)
            loaded = load(spec, s.device)
            if spec.dtype == "bfloat16" and spec.eval_questions:  # the folder is readable inside `with` only
                self.reference = load(replace(spec, dtype="float32"), s.device)
        prompter = Prompter.for_spec(loaded, spec)
        batch = DecodeBatch.for_model(loaded)
        batch.reserve(s.batch_size_for(batch.device.type), RESERVED_COLUMNS)
        warm_up(batch, prompter)
        return spec, loaded, prompter, batch

    def _measure_agreement(self, batcher: Batcher) -> None:
        """bfloat16 against float32 on the model's evaluation questions, in the batcher's idle time after ready."""
        from serving.engine import agreement

        def report(result: dict[str, Any]) -> None:
            self.agreement = result
            log.info("bfloat16 against float32 on the evaluation questions: %s", result)

        self.agreement = {"reference": "float32", "status": "measuring while idle"}
        models, self.reference = [self.reference, self.loaded], None
        batcher.when_idle(agreement.stepwise(models, self.spec, report))

    async def load(self) -> None:
        """Load the model on the thread that will then run the batcher: one thread does all of the model's work.
        (Measured: a decoding step on CPU took twice as long when another long-lived thread had run torch before,
        as asyncio.to_thread's pool thread does: OpenMP then has more threads than cores and stops spinning.)"""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future = loop.create_future()
        threading.Thread(target=self._own_the_model, args=(loop, outcome), name="generate", daemon=True).start()
        try:
            self.spec, self.loaded, self.prompter, self.batcher = await outcome
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.settings.model_uri, self.error)
            self.on_failure()
            return
        try:
            self.tracing = self._tracing()
        except ValueError as exc:
            self.error = str(exc)
            log.error("%s", self.error)
            self.batcher.request_stop()
            self.batcher = None
            self.on_failure()
            return
        from serving.engine.structured import Grammars

        self.grammars = Grammars.for_model(self.loaded)
        if self.reference is not None:
            self._measure_agreement(self.batcher)
        self.loaded_at = int(time.time())
        log.info("model %s ready in %.1f s", self.settings.model_uri, time.perf_counter() - started)

    def _tracing(self):
        """The exporter of this server's traces, when ``traces_url`` is set; ValueError without an experiment."""
        s, spec = self.settings, self.spec
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
        tracing.served = Served(
            self.model_id, spec.name, spec.version, spec.alias, spec.prompt_name, spec.prompt_version
        )
        log.info("tracing every answer into experiment %s at %s", experiment, s.traces_url)
        return tracing

    def _own_the_model(self, loop: asyncio.AbstractEventLoop, outcome: asyncio.Future) -> None:
        def settle(result) -> None:
            if outcome.done():  # the server stopped while loading: nobody will use this batcher
                if isinstance(result, tuple):
                    result[-1].request_stop()
                return
            (outcome.set_exception if isinstance(result, BaseException) else outcome.set_result)(result)

        try:
            spec, loaded, prompter, batch = self._load_blocking()
        except Exception as exc:
            loop.call_soon_threadsafe(settle, exc)
            return
        s = self.settings
        batcher = Batcher(batch, s.batch_size_for(batch.device.type), s.max_wait_ms, s.max_queue)
        loop.call_soon_threadsafe(settle, (spec, loaded, prompter, batcher))
        batcher.serve_here()


def warm_up(batch: DecodeBatch, prompter: Prompter) -> None:
    """Cache the shared prompt prefixes, then two tokens through the real path before /health says ready: proves the
    model can be batched this way. With CUDA graphs, one short batch per row bucket captures their graphs now, so
    the first requests after ready do not pay for it."""
    for prefix in prompter.shared_prefixes():
        if len(prefix) >= MIN_SHARED_PREFIX:
            batch.share_prefix(prefix)
    hello = prompter.render("Hello")
    for rows in batch.graphs.row_buckets() if batch.graphs and batch.graphs.capture else [1]:
        batch.run([prompter.sequence(hello, {**WARM_UP, "max_new_tokens": 2}) for _ in range(rows)])


MIN_SHARED_PREFIX = 4  # tokens; a shorter shared prefix saves less than its bookkeeping costs
RESERVED_COLUMNS = 256  # KV-cache columns allocated at start for every row (a prompt and its answer, typically)
WARM_UP = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}


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
