"""OpenAI-compatible endpoints and token streaming, so existing clients (the ``openai`` package, LangChain's
ChatOpenAI) talk to this server unchanged.

- ``GET /v1/models``: the served model.
- ``POST /v1/chat/completions``: messages rendered with the model's chat template (a plain "Role: text" template for
  models without one); with ``stream: true`` it answers server-sent events of ``chat.completion.chunk`` objects
  ending with ``data: [DONE]``.
- ``POST /ask/stream``: server-sent events ``{"token": ...}`` then ``{"done": true, "tokens": n, "answer": ...}``.
Streams share the continuous batch with every other request: a streamed token is one row's token of a batched step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.app_state import (
    Ready,
    check_questions,
    check_template,
    generate,
    sequence_for,
    settings_for,
    stream_text,
    unless_disconnected,
)
from serving.schemas import AskRequest


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (n, user, ...): accepted

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


router = APIRouter()


@router.get("/v1/models")
async def models(st: Ready) -> dict:
    return {
        "object": "list",
        "data": [{"id": st.model_id, "object": "model", "created": st.loaded_at, "owned_by": "mlflow-genai-lifecycle"}],
    }


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, st: Ready, request: Request):
    overrides = {
        "max_new_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
    }
    settings = settings_for(st, overrides)
    if sum(len(m.content) for m in body.messages) > st.settings.max_question_chars * 4:
        raise HTTPException(422, f"the conversation is too long (limit {st.settings.max_question_chars * 4} chars)")
    prompt = st.prompter.render_messages([m.model_dump() for m in body.messages])
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": st.model_id}
    if not body.stream:
        seq = sequence_for(st, prompt, settings)
        out = await unless_disconnected(request, generate(st, seq))
        prompt_tokens, completion_tokens = len(out.prompt_ids), len(out.tokens)
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": st.prompter.decode(out.tokens).strip()},
                    "finish_reason": out.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    job, pieces = stream_text(st, prompt, settings)

    async def events() -> AsyncIterator[str]:
        chunk = {**head, "object": "chat.completion.chunk"}
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        async for piece in pieces:
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": job.seq.finish_reason}]})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/ask/stream")
async def ask_stream(body: AskRequest, st: Ready):
    settings = settings_for(st, body.model_dump(exclude={"question", "prompt_template"}))
    question = check_questions(st, [body.question])[0]
    job, pieces = stream_text(st, st.prompter.render(question, check_template(body.prompt_template)), settings)

    async def events() -> AsyncIterator[str]:
        text = ""
        async for piece in pieces:
            text += piece
            yield _sse({"token": piece})
        yield _sse({"done": True, "tokens": len(job.seq.tokens), "answer": text.strip()})

    return StreamingResponse(events(), media_type="text/event-stream")
