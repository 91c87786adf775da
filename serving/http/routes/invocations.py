"""``/invocations``: MLflow's scoring protocol (``serving.http.protocol``: ``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, with ``params``), answering ``{"predictions": [...]}`` as ``mlflow models serve`` does.
The body's schema is a ``oneOf`` of the four shapes, enforced before the protocol reads it. A ``text/csv`` body (a
header row, then one row per record, as ``mlflow models serve`` reads with pandas) is the same as its
``dataframe_split`` (``CsvBody``)."""

# no `from __future__ import annotations`: FastAPI reads the body's type, built per app, from the annotation

import csv
import io
import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from serving.http import protocol
from serving.http.requests import answer_all
from serving.http.schemas import GENERATION_ERRORS, ErrorBody, ErrorItem, Predictions, RequestModels, errors
from serving.http.state import Ready

CSV_EXAMPLE = "question\nWhat is Python?\n"
EXAMPLE = {
    "dataframe_split": {"columns": ["question"], "data": [["What is Python?"]]},
    "params": {"max_new_tokens": 32},
}


def csv_as_json(body: bytes) -> bytes:
    """A CSV body as the ``dataframe_split`` it describes (the first row names the columns); ValueError if it is not
    UTF-8 CSV."""
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"the text/csv body cannot be read: {exc}") from None
    columns, data = (rows[0], rows[1:]) if rows else ([], [])
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def schema_errors(detail: list[dict]) -> str:
    """What a 422's detail says about a CSV body read as ``dataframe_split`` (the other shapes' complaints left out)."""
    split = [d for d in detail if d.get("loc", [])[1:2] == ["SplitInput"]] or detail
    return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[2:]) or 'body'}: {d.get('msg')}" for d in split)


async def invalid_body(scope, receive, send, message: str) -> None:
    """400 ``invalid_body`` in the one error shape (``ErrorBody``), sent from the middleware."""
    body = ErrorBody(detail=[ErrorItem(loc=["body"], msg=message, type="invalid_body")])
    await JSONResponse(body.model_dump(), status_code=400)(scope, receive, send)


class CsvBody:
    """ASGI middleware: a ``text/csv`` POST to /invocations reaches the route as its JSON ``dataframe_split``, so the
    limits are the same. A CSV body has no schema of its own to break (any text is one), so a body the route refuses
    as a schema violation (422), or cannot read, answers 400 ``invalid_body`` saying what in it is wrong."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["type"] != "http" or scope["path"] != "/invocations" or content_type != b"text/csv":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        try:
            converted = csv_as_json(body)
        except ValueError as exc:
            await invalid_body(scope, receive, send, str(exc))
            return
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        new_headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(converted)).encode())]
        sent, refused, chunks = False, False, []

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # a disconnect, once the body is read
            sent = True
            return {"type": "http.request", "body": converted, "more_body": False}

        async def refused_as_400(message):
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 422:
                refused = True  # held: the body says why, and it is rewritten
                return
            if not refused:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                why = schema_errors(json.loads(b"".join(chunks)).get("detail", []))
                await invalid_body(
                    scope, receive, send, f"the text/csv body, read as dataframe_split, is refused: {why}"
                )

        await self.app({**scope, "headers": new_headers}, replay, refused_as_400)


async def json_body(request: Request) -> None:
    """415 for a body that is neither JSON nor CSV (which ``CsvBody`` turned into JSON), as ``mlflow models serve``
    answers (before the body is validated)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/json":
        raise HTTPException(415, f"Content-Type must be application/json or text/csv, got {content_type or 'none'}")


def build(models: RequestModels) -> APIRouter:
    router = APIRouter(tags=["mlflow"])
    Invocation = models.invocation

    @router.post(
        "/invocations",
        response_model=Predictions,
        responses={**GENERATION_ERRORS, **errors(415)},
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"example": EXAMPLE},
                    "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
                }
            }
        },
    )
    async def invocations(
        body: Invocation, st: Ready, request: Request, _: Annotated[None, Depends(json_body)]
    ) -> Predictions:
        try:
            questions, params = protocol.parse_invocation(body.model_dump(exclude_none=True))
        except protocol.ProtocolError as exc:
            raise HTTPException(422, str(exc)) from None
        answers = await answer_all(st, questions, params, request)
        return Predictions(predictions=[a.answer for a in answers])

    return router
