"""Feedback on an answer, recorded in MLflow as an assessment on the answer's trace, through the tracking server's
REST API (``POST /api/3.0/mlflow/traces/<trace id>/assessments``): the server still imports no MLflow.

A value (yes/no, a number or a label) becomes a *feedback* assessment, with its rationale and who gave it as the
source (``HUMAN``); a corrected answer becomes an *expectation* (``expected_response``), which ``mode=monitor`` can
carry into the next evaluation set. The tracking server's own credentials come from the environment, as MLflow's
client reads them: ``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from core import telemetry

ASSESSMENTS = "/api/3.0/mlflow/traces/{trace_id}/assessments"
TIMEOUT_S = 10


class UnknownTrace(LookupError):
    """The tracking server has no trace with this id."""


class TrackingUnavailable(RuntimeError):
    """The tracking server could not be reached, or failed; the message says how."""


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tracking server's credentials from the environment, as MLflow's client sends them."""
    environ = os.environ if environ is None else environ
    if token := environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def assessments(
    trace_id: str, value: Any, name: str, source: str, rationale: str | None, corrected_answer: str | None
) -> list[dict[str, Any]]:
    """The assessments one piece of feedback becomes: the feedback itself, and the corrected answer if any."""
    origin = {"source_type": "HUMAN", "source_id": source}
    feedback = {"assessment_name": name, "trace_id": trace_id, "source": origin, "feedback": {"value": value}}
    if rationale:
        feedback["rationale"] = rationale
    made = [feedback]
    if corrected_answer:
        made.append(
            {
                "assessment_name": telemetry.EXPECTED_RESPONSE,
                "trace_id": trace_id,
                "source": origin,
                "expectation": {"value": corrected_answer},
            }
        )
    return made


def record(tracking_url: str, assessment: dict[str, Any]) -> str:
    """Create ``assessment`` on the tracking server; its id. ``UnknownTrace`` for a trace it does not have,
    ``TrackingUnavailable`` when it cannot be asked."""
    url = tracking_url.rstrip("/") + ASSESSMENTS.format(trace_id=assessment["trace_id"])
    body = json.dumps({"assessment": assessment}).encode()
    headers = {"Content-Type": "application/json", **auth_headers()}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())["assessment"]["assessment_id"]
    except urllib.error.HTTPError as exc:
        detail = _message(exc)
        if exc.code == 404:
            raise UnknownTrace(detail) from None
        raise TrackingUnavailable(f"the tracking server answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise TrackingUnavailable(f"the tracking server did not answer ({getattr(exc, 'reason', exc)})") from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason or "no reason given"
