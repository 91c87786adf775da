"""OpenAI-compatible endpoints and token streaming, so existing clients (the ``openai`` package, LangChain's
ChatOpenAI) talk to this server unchanged.

- ``GET /v1/models``: the served model.
- ``POST /v1/chat/completions``: messages rendered with the model's chat template (a plain "Role: text" template for
  models without one). Without ``stream`` it goes through the batcher; with ``stream: true`` it answers server-sent
  events of ``chat.completion.chunk`` objects ending with ``data: [DONE]``.
- ``POST /ask/stream``: server-sent events ``{"token": ...}`` then ``{"done": true, "tokens": n}``.
Streaming runs outside the batcher (one generation thread per stream): simpler, and a stream holds no batch back.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.app_state import (
    Ready,
    answer_prompt,
    check_questions,
    check_template,
    settings_for,
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


async def _pieces(iterator: Iterator[str]) -> AsyncIterator[str]:
    """Each piece of a blocking iterator, fetched on a worker thread."""
    done = object()
    while True:
        piece = await asyncio.to_thread(next, iterator, done)
        if piece is done:
            return
        yield piece


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
    prompt = st.generator.render_messages([m.model_dump() for m in body.messages])
    if len(prompt) > st.settings.max_question_chars * 4:
        raise HTTPException(422, f"the conversation is too long (limit {st.settings.max_question_chars * 4} chars)")
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": completion_id, "created": created, "model": st.model_id}
    prompt_tokens = st.generator.count_tokens(prompt)
    if not body.stream:
        out = await unless_disconnected(request, answer_prompt(st, prompt, settings))
        finish = "length" if out.tokens >= settings["max_new_tokens"] else "stop"
        return {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": out.tokens,
                "total_tokens": prompt_tokens + out.tokens,
            },
        }

    async def events() -> AsyncIterator[str]:
        chunk = {**head, "object": "chat.completion.chunk"}
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        text = ""
        async for piece in _pieces(st.generator.stream(prompt, settings)):
            text += piece
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        finish = "length" if st.generator.count_tokens(text) >= settings["max_new_tokens"] else "stop"
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/ask/stream")
async def ask_stream(body: AskRequest, st: Ready):
    settings = settings_for(st, body.model_dump(exclude={"question", "prompt_template"}))
    question = check_questions(st, [body.question])[0]
    prompt = st.generator.render(question, check_template(body.prompt_template))

    async def events() -> AsyncIterator[str]:
        text = ""
        async for piece in _pieces(st.generator.stream(prompt, settings)):
            text += piece
            yield _sse({"token": piece})
        yield _sse({"done": True, "tokens": st.generator.count_tokens(text), "answer": text.strip()})

    return StreamingResponse(events(), media_type="text/event-stream")
