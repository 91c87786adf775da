"""``/ask`` {question, ...} and ``/ask/batch`` {questions: [...], ...}: answers with tokens, latency and model
version, a batch in its order; ``/ask/stream``: server-sent events ``{"token": ...}`` then ``{"done": true, "tokens":
n, "answer": ...}``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from serving.requests import answer_all, check_questions, check_template, settings_for, sse, stream_text
from serving.schemas import AskRequest, AskResponse, BatchRequest, BatchResponse
from serving.state import Ready

router = APIRouter()


@router.post("/ask", response_model=AskResponse)
async def ask(body: AskRequest, st: Ready, request: Request) -> AskResponse:
    overrides = body.model_dump(exclude={"question"})
    return (await answer_all(st, [body.question], overrides, request))[0]


@router.post("/ask/batch", response_model=BatchResponse)
async def ask_batch(body: BatchRequest, st: Ready, request: Request) -> BatchResponse:
    overrides = body.model_dump(exclude={"questions"})
    return BatchResponse(answers=await answer_all(st, body.questions, overrides, request))


@router.post("/ask/stream")
async def ask_stream(body: AskRequest, st: Ready):
    settings = settings_for(st, body.model_dump(exclude={"question", "prompt_template"}))
    question = check_questions(st, [body.question])[0]
    job, pieces = stream_text(st, st.prompter.render(question, check_template(body.prompt_template)), settings)

    async def events() -> AsyncIterator[str]:
        text = ""
        async for piece in pieces:
            text += piece
            yield sse({"token": piece})
        yield sse({"done": True, "tokens": len(job.seq.tokens), "answer": text.strip()})

    return StreamingResponse(events(), media_type="text/event-stream")
