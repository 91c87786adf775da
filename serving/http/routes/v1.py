"""OpenAI-compatible endpoints, so existing clients (the ``openai`` package, LangChain's ChatOpenAI) talk to this
server unchanged: ``GET /v1/models`` (the served model) and ``POST /v1/chat/completions``, messages rendered with the
model's chat template (a plain "Role: text" template for models without one); with ``stream: true`` it answers
server-sent events of ``chat.completion.chunk`` objects ending with ``data: [DONE]``. A stream is a row of the
continuous batch like any other request. ``response_format`` json_object / json_schema holds the answer to JSON (or
to the schema) while it decodes (``serving.engine.structured``); without max_tokens such an answer may use the server's
cap, so that it can be complete."""

# no `from __future__ import annotations`: FastAPI reads the body's type, built per app, from the annotation

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from serving.engine import requested_schema
from serving.http.requests import (
    EventStream,
    constrained,
    generate,
    sequence_for,
    settings_for,
    sse,
    stream_events,
    stream_text,
    unless_disconnected,
)
from serving.http.schemas import (
    CHAT_ERRORS,
    EVENT_STREAM,
    AssistantMessage,
    ChatCompletion,
    Choice,
    ModelCard,
    ModelList,
    RequestModels,
    Usage,
    errors,
)
from serving.http.state import Ready
from serving.http.tracing import current as current_trace

OWNER = "mlflow-genai-lifecycle"


def build(models: RequestModels) -> APIRouter:
    router = APIRouter(tags=["openai"])
    Chat = models.chat

    @router.get("/v1/models", response_model=ModelList, responses=errors(401, 422, 503))
    async def list_models(st: Ready) -> ModelList:
        return ModelList(data=[ModelCard(id=st.model_id, created=st.loaded_at, owned_by=OWNER)])

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            200: {"content": EVENT_STREAM, "description": "with stream: true, chunks (an {error} event if it fails)"},
            **CHAT_ERRORS,
        },
    )
    async def chat_completions(body: Chat, st: Ready, request: Request):
        trace = current_trace()
        messages = [m.model_dump() for m in body.messages]
        trace.inputs({"messages": messages})
        schema = requested_schema(body.response_format.model_dump(by_alias=True) if body.response_format else None)
        limit = body.max_completion_tokens or body.max_tokens
        if schema is not None and limit is None:
            limit = st.settings.max_new_tokens_cap  # a JSON answer must be complete to parse: the longest allowed
        settings = settings_for(st, {"max_new_tokens": limit, "temperature": body.temperature, "top_p": body.top_p})
        trace.settings(settings)
        prompt = st.engine.render_messages(messages)
        seq = constrained(st, sequence_for(st, prompt, settings, ("body", "messages")), schema)
        seq.cache_salt = body.cache_salt  # never traced or logged: it is the caller's secret
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": st.model_id}
        if not body.stream:
            out = await unless_disconnected(request, generate(st, seq))
            content = st.engine.decode(out.tokens)
            trace.answer({"messages": messages}, out, content)
            trace.outputs(content)
            return ChatCompletion(
                **head,
                choices=[
                    Choice(
                        index=0,
                        message=AssistantMessage(content=content),
                        finish_reason=out.finish_reason,
                    )
                ],
                usage=Usage.of(out),
            )

        job, pieces = stream_text(st, seq)

        chunk = {**head, "object": "chat.completion.chunk"}

        def delta(content: dict) -> dict:
            return {**chunk, "choices": [{"index": 0, "delta": content, "finish_reason": None}]}

        def closing(_: str) -> list:
            done = job.seq
            events = [{**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": done.finish_reason}]}]
            if body.stream_options and body.stream_options.include_usage:
                events.append({**chunk, "choices": [], "usage": Usage.of(done).model_dump()})
            return [*events, "[DONE]"]

        async def events() -> AsyncIterator[str]:
            yield sse(delta({"role": "assistant"}))
            async for event in stream_events(
                job, pieces, {"messages": messages}, lambda p: delta({"content": p}), closing
            ):
                yield event

        return EventStream(events())

    return router
