"""The tracking session an invocation gets, chosen once: a standalone run, or a job of a sweep.

``open_session(cfg)`` gives ``TrackingSession`` (a parent run with a run per stage) or, inside a sweep that
``SweepCallback`` opened, ``SweepJobSession`` (runs under the sweep's run, tagged with the job).
``failed_before_stages`` records a failure that happened before any stage ran, where the session kind wants it
(a sweep job: its summary lists every job); a standalone run opens nothing for it, so a quick failure stays quick.
Importing this module imports no MLflow.
"""

from __future__ import annotations

from typing import Any

from lifecycle.sweep_job import current_job


def open_session(cfg: Any):
    job = current_job()
    if job is None:
        from lifecycle.integrations.tracking import TrackingSession

        return TrackingSession.open(cfg)
    from lifecycle.integrations.sweep_runs import SweepJobSession

    return SweepJobSession.open(cfg, job)


def failed_before_stages(cfg: Any, report: Any, seconds: float) -> None:
    if current_job() is None:
        return
    session = open_session(cfg)
    session.record_failure_before_stages(report, seconds)
    report.raises_on_failure = session.raises_on_failure
