"""The one path a request takes to an answer: generation settings checked against the model's defaults and the
server's limits, questions checked, prompts encoded, the engine (429 at once on a full queue, 504 past the
request timeout), streams, and a client that disconnects freeing its place. Every route goes through here.

Refusals a schema cannot state carry a stable ``type`` in the error body (``Refused``): a prompt over the token limit
is 400 ``context_length_exceeded`` (as OpenAI answers it: the body is well formed, so not 422, and the client must
shorten it, so not a retry), a response_format the grammar engine cannot enforce 400 ``unenforceable_schema``, and an
answer whose own decoding failed 500 ``generation_failed`` (the other requests of its batch are not affected)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse

from core import generation
from core.generation import merge_settings
from serving.engine import GenerationFailed, Overloaded, PromptTooLong, Sequence, ShuttingDown, Unenforceable
from serving.http.schemas import QUESTION_PATTERN, AskResponse
from serving.http.state import ServingState
from serving.http.tracing import current as current_trace

QUESTION = re.compile(QUESTION_PATTERN)  # what the schemas say a question needs (/invocations is checked here too)
ASCII_WHITESPACE = " \t\n\r\f\v"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
UNENFORCEABLE_SCHEMA = "unenforceable_schema"
GENERATION_FAILED = "generation_failed"


class Refused(HTTPException):
    """An HTTP error with its own stable ``type`` and the part of the body it is about (``loc``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        loc: tuple[str | int, ...] = ("request",),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.type, self.loc = type_, list(loc)


def settings_for(state: ServingState, overrides: dict[str, Any]) -> dict[str, Any]:
    cap = state.settings.max_new_tokens_cap
    if (overrides.get("max_new_tokens") or 0) > cap:
        raise HTTPException(422, f"max_new_tokens must be at most {cap}")
    defaults = dict(state.spec.generation)
    defaults["max_new_tokens"] = min(defaults.get("max_new_tokens") or cap, cap)  # the cap bounds the default too
    try:
        return merge_settings(defaults, overrides)
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
        if not isinstance(question, str) or not QUESTION.search(question):
            raise HTTPException(422, "every question must be a string with a character other than whitespace")
        if len(question) > s.max_question_chars:
            raise HTTPException(422, f"a question may have at most {s.max_question_chars} characters")
        cleaned.append(question.strip(ASCII_WHITESPACE))
    return cleaned


def sequence_for(
    state: ServingState, prompt: str, settings: dict[str, Any], loc: tuple[str, ...] = ("body",)
) -> Sequence:
    """A generation request for a rendered prompt; 400 ``context_length_exceeded`` when it does not fit the token
    limit (``loc``: the part of the body that brought the prompt)."""
    try:
        return state.engine.sequence(prompt, settings)
    except PromptTooLong as exc:
        raise Refused(400, str(exc), CONTEXT_LENGTH_EXCEEDED, loc) from None


def constrained(state: ServingState, seq: Sequence, schema: dict[str, Any] | None) -> Sequence:
    """``seq`` held to ``schema`` while it decodes (structured output); 400 when the schema cannot be enforced."""
    if schema is not None:
        try:
            state.engine.constrain(seq, schema)
        except Unenforceable as exc:
            message = f"response_format: this server cannot enforce that JSON schema: {exc}"
            raise Refused(400, message, UNENFORCEABLE_SCHEMA, ("body", "response_format")) from None
    return seq


def _busy(exc: Exception) -> HTTPException:
    if isinstance(exc, Overloaded):
        return HTTPException(429, f"server busy: {exc}; retry shortly", headers={"Retry-After": "1"})
    return HTTPException(503, str(exc), headers={"Retry-After": "5"})


async def generate(state: ServingState, seq: Sequence) -> Sequence:
    """``seq`` through the engine: 429 at once when the queue is full, 504 past the request timeout."""
    try:
        return await asyncio.wait_for(state.engine.submit(seq), state.settings.request_timeout_s)
    except (Overloaded, ShuttingDown) as exc:
        raise _busy(exc) from None
    except TimeoutError:
        raise HTTPException(504, f"no answer within {state.settings.request_timeout_s} s") from None
    except GenerationFailed as exc:
        raise failed(exc) from None


def failed(exc: GenerationFailed) -> Refused:
    return Refused(500, f"this answer failed while it was generated: {exc}", GENERATION_FAILED)


def stream_error(exc: GenerationFailed) -> dict[str, Any]:
    """The event that ends a stream whose answer failed after its 200 was sent (OpenAI's shape: ``error``)."""
    return {"error": {"message": failed(exc).detail, "type": GENERATION_FAILED}}


def stream_text(state: ServingState, seq: Sequence):
    """(job, text pieces) for a streamed answer. Queueing happens now, so a full queue is a 429 before any byte is
    sent; the request timeout does not apply once a stream has started (the client ends it by disconnecting)."""
    try:
        job = state.engine.enqueue(seq, stream=True)
    except (Overloaded, ShuttingDown) as exc:
        raise _busy(exc) from None

    async def pieces():
        text = state.engine.text_stream()
        async for token in state.engine.stream(job):
            if piece := text.push(token):
                yield piece

    return job, pieces()


async def _answer(state: ServingState, question: str, seq: Sequence) -> AskResponse:
    started = time.perf_counter()
    out = await generate(state, seq)
    answer = state.engine.decode(out.tokens)
    trace = current_trace()
    trace.answer({"question": question}, out, answer)
    return AskResponse(
        question=question,
        answer=answer,
        tokens=len(out.tokens),
        latency_s=time.perf_counter() - started,
        model_version=state.spec.version,
        trace_id=trace.trace_id,
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
    trace = current_trace()
    trace.inputs({"question": questions[0]} if len(questions) == 1 else {"questions": questions})
    template = check_template(overrides.pop("prompt_template", None))
    settings = settings_for(state, overrides)
    trace.settings(settings)
    questions = check_questions(state, questions)
    seqs = [sequence_for(state, state.engine.render(q, template), settings) for q in questions]  # all valid first
    tasks = [asyncio.ensure_future(_answer(state, q, seq)) for q, seq in zip(questions, seqs, strict=True)]
    try:
        answers = list(await unless_disconnected(request, asyncio.gather(*tasks)))
        trace.outputs(answers[0].answer if len(answers) == 1 else [a.answer for a in answers])
        return answers
    finally:
        for task in tasks:
            task.cancel()  # one failed or the client left: free the others' slots


async def stream_events(job, pieces, inputs: dict[str, Any], piece_event, closing) -> AsyncIterator[str]:
    """A streamed answer's server-sent events: ``piece_event(piece)`` for each text piece, then ``closing(answer)``'s
    events, the answer recorded on the request's trace; if it fails, an error event ends the stream instead."""
    trace, text = current_trace(), ""
    try:
        async for piece in pieces:
            text += piece
            yield sse(piece_event(piece))
    except GenerationFailed as exc:
        trace.refused(f"{GENERATION_FAILED}: {exc}")
        yield sse(stream_error(exc))
        return
    answer = text.strip()
    trace.answer(inputs, job.seq, answer)
    trace.outputs(answer)
    for event in closing(answer):
        yield sse(event)


class EventStream(StreamingResponse):
    """Server-sent events: what /ask/stream and a streamed chat completion answer (documented as such)."""

    media_type = "text/event-stream"


def sse(data: dict | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
