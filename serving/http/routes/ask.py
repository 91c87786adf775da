"""``/ask`` {question, ...} and ``/ask/batch`` {questions: [...], ...}: answers with tokens, latency and model
version, a batch in its order; ``/ask/stream``: server-sent events ``{"token": ...}`` then ``{"done": true, "tokens":
n, "answer": ...}``."""

# no `from __future__ import annotations`: FastAPI reads the bodies' types, built per app, from the annotations

from fastapi import APIRouter, Request

from serving.http.requests import (
    EventStream,
    answer_all,
    check_questions,
    check_template,
    sequence_for,
    settings_for,
    stream_events,
    stream_text,
)
from serving.http.schemas import EVENT_STREAM, GENERATION_ERRORS, AskResponse, BatchResponse, RequestModels, json_errors
from serving.http.state import Ready
from serving.http.tracing import current as current_trace


def build(models: RequestModels) -> APIRouter:
    router = APIRouter(tags=["ask"])
    Ask, Batch = models.ask, models.batch

    @router.post("/ask", response_model=AskResponse, responses=GENERATION_ERRORS)
    async def ask(body: Ask, st: Ready, request: Request) -> AskResponse:
        overrides = body.model_dump(exclude={"question"})
        return (await answer_all(st, [body.question], overrides, request))[0]

    @router.post("/ask/batch", response_model=BatchResponse, responses=GENERATION_ERRORS)
    async def ask_batch(body: Batch, st: Ready, request: Request) -> BatchResponse:
        overrides = body.model_dump(exclude={"questions"})
        return BatchResponse(answers=await answer_all(st, body.questions, overrides, request))

    @router.post(
        "/ask/stream",
        response_class=EventStream,
        responses={
            200: {"content": EVENT_STREAM, "description": "tokens as they come; an {error} event if the answer fails"},
            **json_errors(400, 401, 422, 429, 503),
        },
    )
    async def ask_stream(body: Ask, st: Ready):
        trace = current_trace()
        trace.inputs({"question": body.question})
        settings = settings_for(st, body.model_dump(exclude={"question", "prompt_template"}))
        trace.settings(settings)
        question = check_questions(st, [body.question])[0]
        prompt = st.engine.render(question, check_template(body.prompt_template))
        job, pieces = stream_text(st, sequence_for(st, prompt, settings, ("body", "question")))

        def done(answer: str) -> list[dict]:
            return [{"done": True, "tokens": len(job.seq.tokens), "answer": answer}]

        return EventStream(stream_events(job, pieces, {"question": question}, lambda piece: {"token": piece}, done))

    return router
