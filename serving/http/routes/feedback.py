"""``POST /v1/feedback``: feedback on an answer, named by its trace id (``X-Trace-Id``), recorded in MLflow as an
assessment on that trace (``serving.http.feedback``). Offered when the server records traces (``SERVING_TRACES_URL``);
401 without the API key as everywhere, 404 for a trace the tracking server does not have, 503 when it cannot be
reached. An answer's trace is exported within about a second: feedback that arrives sooner flushes the export first."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from serving.http import feedback
from serving.http.requests import Refused
from serving.http.schemas import FEEDBACK_DESCRIPTIONS, FeedbackRecorded, FeedbackRequest, errors
from serving.http.state import Ready, ServingState

TRACE_NOT_FOUND = "trace_not_found"
TRACKING_UNAVAILABLE = "tracking_unavailable"
FLUSH_MS = 5000

router = APIRouter(tags=["feedback"])


@router.post(
    "/v1/feedback",
    status_code=201,
    response_model=FeedbackRecorded,
    responses=errors(401, 404, 422, 503, described=FEEDBACK_DESCRIPTIONS),
)
async def give_feedback(body: FeedbackRequest, st: Ready) -> FeedbackRecorded:
    made = feedback.assessments(
        body.trace_id, body.value, body.name, body.source, body.rationale, body.corrected_answer
    )
    ids = [await asyncio.to_thread(_record, st, assessment) for assessment in made]
    return FeedbackRecorded(trace_id=body.trace_id, assessment_ids=ids)


def _record(st: ServingState, assessment: dict) -> str:
    tracing = st.tracing
    try:
        try:
            return feedback.record(tracing.url, assessment)
        except feedback.UnknownTrace:
            tracing.processor.force_flush(FLUSH_MS)  # the answer's trace may still be on its way
            return feedback.record(tracing.url, assessment)
    except feedback.UnknownTrace as exc:
        raise Refused(
            404, f"no trace {assessment['trace_id']} in {tracing.url}: {exc}", TRACE_NOT_FOUND, ("body", "trace_id")
        ) from None
    except feedback.TrackingUnavailable as exc:
        raise Refused(
            503, f"feedback not recorded: {exc}", TRACKING_UNAVAILABLE, headers={"Retry-After": "5"}
        ) from None
