"""``/invocations``: MLflow's scoring protocol (``serving.protocol``: ``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, with ``params``), answering ``{"predictions": [...]}`` as ``mlflow models serve`` does."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request

from serving import protocol
from serving.requests import answer_all
from serving.schemas import Predictions
from serving.state import Ready

router = APIRouter()
EXAMPLE = {
    "dataframe_split": {"columns": ["question"], "data": [["What is Python?"]]},
    "params": {"max_new_tokens": 32},
}


@router.post(
    "/invocations",
    response_model=Predictions,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
async def invocations(request: Request, st: Ready) -> Predictions:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/json":
        raise HTTPException(415, f"Content-Type must be application/json, got {content_type or 'none'}")
    try:
        payload = json.loads(await request.body())
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None
    try:
        questions, params = protocol.parse_invocation(payload)
    except protocol.ProtocolError as exc:
        raise HTTPException(400, str(exc)) from None
    answers = await answer_all(st, questions, params, request)
    return Predictions(predictions=[a.answer for a in answers])
