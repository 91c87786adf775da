"""``/invocations``: MLflow's scoring protocol (``serving.protocol``: ``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, with ``params``), answering ``{"predictions": [...]}`` as ``mlflow models serve`` does.
The body's schema is a ``oneOf`` of the four shapes, enforced before the protocol reads it."""

# no `from __future__ import annotations`: FastAPI reads the body's type, built per app, from the annotation

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from serving import protocol
from serving.requests import answer_all
from serving.schemas import GENERATION_ERRORS, Predictions, RequestModels, errors
from serving.state import Ready

EXAMPLE = {
    "dataframe_split": {"columns": ["question"], "data": [["What is Python?"]]},
    "params": {"max_new_tokens": 32},
}


async def json_body(request: Request) -> None:
    """415 for a body that is not JSON, as ``mlflow models serve`` answers (before the body is validated)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/json":
        raise HTTPException(415, f"Content-Type must be application/json, got {content_type or 'none'}")


def build(models: RequestModels) -> APIRouter:
    router = APIRouter(tags=["mlflow"])
    Invocation = models.invocation

    @router.post(
        "/invocations",
        response_model=Predictions,
        responses={**GENERATION_ERRORS, **errors(415)},
        openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
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
