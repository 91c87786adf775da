"""What every route shares: the serving state, its FastAPI dependencies, and the one path a prompt takes to an answer
(validation of generation settings, the batcher, 429 on a full queue, 504 past the timeout)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from core import generation
from core.generation import merge_settings
from serving.engine import Batcher, Overloaded, Sequence, ShuttingDown
from serving.metrics import Metrics
from serving.prompting import Prompter, PromptTooLong, TextStream
from serving.schemas import AskResponse
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.decoding import DecodeBatch

log = logging.getLogger(__name__)


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = None
        self.loaded = None
        self.prompter: Prompter | None = None
        self.batcher: Batcher | None = None
        self.error: str | None = None
        self.agreement: dict[str, Any] | None = None  # bfloat16 against float32, when serving bfloat16
        self.reference = None  # the float32 model that agreement is measured against, until it has answered
        self.metrics = Metrics()
        self.loaded_at = 0
        self.on_failure = lambda: None  # called once loading failed (python -m serving stops the server then)

    @property
    def model_id(self) -> str:
        spec = self.spec
        return f"{spec.name}:{spec.version}" if spec and spec.version else (spec.name if spec else "model")

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def _load_blocking(self) -> tuple[Any, Any, Prompter, DecodeBatch]:
        from serving.decoding import DecodeBatch
        from serving.loader import load, resolved

        s = self.settings
        with resolved(s.model_uri) as spec:
            spec = replace(spec, dtype=s.dtype or spec.dtype)
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
        from serving import agreement

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
        if self.reference is not None:
            self._measure_agreement(self.batcher)
        self.loaded_at = int(time.time())
        log.info("model %s ready in %.1f s", self.settings.model_uri, time.perf_counter() - started)

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


def settings_for(state: ServingState, overrides: dict[str, Any]) -> dict[str, Any]:
    cap = state.settings.max_new_tokens_cap
    if (overrides.get("max_new_tokens") or 0) > cap:
        raise HTTPException(422, f"max_new_tokens must be at most {cap}")
    try:
        return merge_settings(state.spec.generation, overrides)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def check_template(template: str | None) -> str | None:
    if template is not None:
        try:
            generation.check_template(template)
        except ValueError as exc:
            raise HTTPException(422, f"prompt_template: {exc}") from None
    return template


def check_questions(state: ServingState, questions: list[str]) -> list[str]:
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


def sequence_for(state: ServingState, prompt: str, settings: dict[str, Any]) -> Sequence:
    """A generation request for a rendered prompt; 422 when it does not fit the model's limits."""
    try:
        return state.prompter.sequence(prompt, settings)
    except PromptTooLong as exc:
        raise HTTPException(422, str(exc)) from None


def _busy(exc: Exception) -> HTTPException:
    if isinstance(exc, Overloaded):
        return HTTPException(429, f"server busy: {exc}; retry shortly", headers={"Retry-After": "1"})
    return HTTPException(503, str(exc), headers={"Retry-After": "5"})


async def generate(state: ServingState, seq: Sequence) -> Sequence:
    """``seq`` through the batcher: 429 at once when the queue is full, 504 past the request timeout."""
    try:
        return await asyncio.wait_for(state.batcher.submit(seq), state.settings.request_timeout_s)
    except (Overloaded, ShuttingDown) as exc:
        raise _busy(exc) from None
    except TimeoutError:
        raise HTTPException(504, f"no answer within {state.settings.request_timeout_s} s") from None


def stream_text(state: ServingState, prompt: str, settings: dict[str, Any]):
    """(job, text pieces) for a streamed answer. Queueing happens now, so a full queue is a 429 before any byte is
    sent; the request timeout does not apply once a stream has started (the client ends it by disconnecting)."""
    seq = sequence_for(state, prompt, settings)
    try:
        job = state.batcher.enqueue(seq, stream=True)
    except (Overloaded, ShuttingDown) as exc:
        raise _busy(exc) from None

    async def pieces():
        text = TextStream(state.prompter)
        async for token in state.batcher.stream(job):
            if piece := text.push(token):
                yield piece

    return job, pieces()


async def _answer(state: ServingState, question: str, seq: Sequence) -> AskResponse:
    started = time.perf_counter()
    out = await generate(state, seq)
    return AskResponse(
        question=question,
        answer=state.prompter.decode(out.tokens).strip(),
        tokens=len(out.tokens),
        latency_s=time.perf_counter() - started,
        model_version=state.spec.version,
    )


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away: once the body is read, the next ASGI message is ``http.disconnect``
    (event-driven, as Starlette's StreamingResponse listens; no polling that would wake the loop for nothing)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request | None, work):
    """Await ``work``; if the client goes away first, cancel it so its queued requests free their slots."""
    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise HTTPException(499, "client disconnected")  # nobody reads this; it ends the request
    return task.result()


async def answer_all(
    state: ServingState, questions: list[str], overrides: dict[str, Any], request: Request | None = None
) -> list[AskResponse]:
    overrides = dict(overrides)
    template = check_template(overrides.pop("prompt_template", None))
    settings = settings_for(state, overrides)
    questions = check_questions(state, questions)
    seqs = [sequence_for(state, state.prompter.render(q, template), settings) for q in questions]  # all valid first
    tasks = [asyncio.ensure_future(_answer(state, q, seq)) for q, seq in zip(questions, seqs, strict=True)]
    try:
        return list(await unless_disconnected(request, asyncio.gather(*tasks)))
    finally:
        for task in tasks:
            task.cancel()  # one failed or the client left: free the others' slots


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
