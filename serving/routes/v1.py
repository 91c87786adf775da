"""OpenAI-compatible endpoints, so existing clients (the ``openai`` package, LangChain's ChatOpenAI) talk to this
server unchanged: ``GET /v1/models`` (the served model) and ``POST /v1/chat/completions``, messages rendered with the
model's chat template (a plain "Role: text" template for models without one); with ``stream: true`` it answers
server-sent events of ``chat.completion.chunk`` objects ending with ``data: [DONE]``. A stream is a row of the
continuous batch like any other request."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from serving.requests import generate, sequence_for, settings_for, sse, stream_text, unless_disconnected
from serving.schemas import ChatRequest
from serving.state import Ready

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
        yield sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        async for piece in pieces:
            yield sse({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        yield sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": job.seq.finish_reason}]})
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
