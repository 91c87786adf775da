"""The served model's production traces in MLflow, for ``mode=monitor``: read for a window, each as
``lifecycle.monitoring.Served``; scores written back onto them as assessments; the last monitor run's window; and
the champion's own evaluation scores to compare with.

Production traces are those the server records (``serving.http.tracing``): tagged with the registered model's name and
version (``core.telemetry``) and with the route that answered. The pyfunc's own traces (``mode=test``, ``mode=promote``)
carry the same model tags but no route, so they are not traffic.
"""

from __future__ import annotations

from datetime import datetime, timezone

import mlflow
from mlflow.entities import AssessmentSource

from core import telemetry as names
from lifecycle import monitoring, tags
from lifecycle.promotion import MEAN

SOURCE = AssessmentSource(source_type="CODE", source_id="mode=monitor")
PAGE = 500


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def served_traces(experiment_id: str, model: str, version: str, start: datetime, end: datetime, limit: int) -> list:
    """The server's traces of ``model`` version ``version`` that started in [start, end), oldest first."""
    query = (
        f"tags.`{names.MODEL_NAME}` = '{model}' AND tags.`{names.MODEL_VERSION}` = '{version}' "
        f"AND timestamp_ms >= {_ms(start)} AND timestamp_ms < {_ms(end)}"
    )
    found = mlflow.search_traces(
        locations=[experiment_id], filter_string=query, max_results=limit, order_by=["timestamp_ms ASC"],
        return_type="list",
    )  # fmt: skip
    return [trace for trace in found if names.ROUTE in trace.info.tags]


def as_served(trace) -> monitoring.Served:
    root = min(trace.data.spans, key=lambda span: span.start_time_ns)
    usage = trace.info.token_usage or {}
    duration = trace.info.execution_duration
    assessments = trace.info.assessments
    feedback = tuple(
        a.feedback.value
        for a in assessments
        if a.name == names.FEEDBACK and a.feedback is not None and isinstance(a.feedback.value, bool)
    )
    corrected = [
        a.expectation.value
        for a in assessments
        if a.name == names.EXPECTED_RESPONSE and a.expectation is not None and isinstance(a.expectation.value, str)
    ]
    ttft = root.attributes.get(names.TIME_TO_FIRST_TOKEN_S)
    return monitoring.Served(
        trace_id=trace.info.trace_id,
        pairs=monitoring.pairs(root.inputs, root.outputs),
        ok=trace.info.state.value == "OK",
        latency_s=duration / 1000 if duration is not None else None,
        time_to_first_token_s=float(ttft) if ttft is not None else None,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        feedback=feedback,
        corrected=corrected[-1] if corrected else None,  # the latest correction
    )


def record_scores(trace_id: str, scores: dict[str, float], run_id: str, rationales: dict[str, str]) -> None:
    """Each score as a feedback assessment on its trace, from the monitor, naming the monitor run (with the judge's
    rationale where one gave it)."""
    for name, value in scores.items():
        mlflow.log_feedback(
            trace_id=trace_id, name=name, value=value, source=SOURCE, rationale=rationales.get(name),
            metadata={"run_id": run_id},
        )  # fmt: skip


def last_until(experiment_id: str) -> datetime | None:
    """Where the last finished monitor run's window ended, if there was one."""
    runs = mlflow.search_runs(
        [experiment_id], f"tags.`{tags.STAGE}` = 'monitor' AND attributes.status = 'FINISHED'",
        order_by=["start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    until = runs[0].data.tags.get(tags.MONITOR_UNTIL) if runs else None
    return datetime.fromisoformat(until).astimezone(timezone.utc) if until else None


def evaluation_of(experiment_id: str, version: str) -> tuple[str, dict[str, float]] | None:
    """(run id, mean scores) of the latest run that scored ``version`` on the evaluation set (``mode=promote``'s
    nested runs), if any."""
    runs = mlflow.search_runs(
        [experiment_id], f"tags.`{tags.MODEL_VERSION}` = '{version}'", order_by=["start_time DESC"],
        max_results=50, output_format="list",
    )  # fmt: skip
    for run in runs:
        if tags.MONITOR_UNTIL in run.data.tags:
            continue  # a monitor run's own means are production's, not an evaluation
        means = {k[: -len(MEAN)]: v for k, v in run.data.metrics.items() if k.endswith(MEAN)}
        if means:
            return run.info.run_id, means
    return None
