"""Run the stages of ``cfg.mode``: resolve, preflight, then execute under one parent MLflow run.

    report = run(cfg)          # never raises for a stage failure; report.failed says so

One invocation = one parent run (tags: lifecycle.mode, lifecycle.status) holding the redacted resolved config as
``config/resolved.yaml``; each stage runs in a nested run named after it. The first failing stage stops the
invocation: its run and the parent are marked FAILED with the error in the ``lifecycle.error`` tag. When the
tracking store itself fails (a tracking server whose database is down), the report says so instead of a traceback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig

from lifecycle import sessions
from lifecycle.registry import StageRegistry
from lifecycle.stage import Stage, StageContext, StageError, StageResult

log = logging.getLogger(__name__)


@dataclass
class LifecycleReport:
    mode: str
    results: list[StageResult] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    error: str | None = None
    raises_on_failure: bool = True  # the session's kind decides: a sweep job returns 1 instead of exiting

    @property
    def failed(self) -> bool:
        return self.error is not None

    def measured(self) -> dict[str, float]:
        """Every stage's metrics and evaluation scores, by name (a later stage's value wins)."""
        out: dict[str, float] = {}
        for result in self.results:
            out.update(result.metrics)
            out.update(result.outputs.get("scores") or {})
        return out


def build_stages(cfg: DictConfig, registry: StageRegistry | None = None) -> list[Stage]:
    registry = registry or StageRegistry.discover()
    return [registry.get(name)(cfg) for name in cfg.mode.stages]


def _as_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_stage(stage: Stage, context: StageContext, explain=_as_text) -> StageResult:
    """Run one stage; an exception becomes a failed result carrying the stage's error (a StageError's own words;
    another exception as ``explain`` puts it: a tracking session names a failing tracking server)."""
    started = time.perf_counter()
    log.info("stage %s: starting", stage.name)
    try:
        result = stage.run(context)
    except Exception as exc:
        log.debug("stage %s failed", stage.name, exc_info=True)
        message = str(exc) if isinstance(exc, StageError) else explain(exc)
        lines = exc.lines if isinstance(exc, StageError) else []
        result = StageResult(stage=stage.name, status="failed", error=message, lines=lines)
    result.duration_s = time.perf_counter() - started
    log.info("stage %s: %s in %.1f s", stage.name, result.status, result.duration_s)
    return result


def _record(result: StageResult, context: StageContext, report: LifecycleReport) -> bool:
    """Keep a stage's result; False when the invocation must stop there."""
    context.results[result.stage] = result
    report.results.append(result)
    if result.error:
        report.error = f"stage {result.stage!r} failed: {result.error}"
    return result.error is None


def run(cfg: DictConfig, registry: StageRegistry | None = None) -> LifecycleReport:
    """Run ``cfg.mode``'s stages under the session ``lifecycle.sessions`` picks (standalone, or a job of a sweep)."""
    started = time.perf_counter()
    report = LifecycleReport(mode=cfg.mode.name)
    try:
        stages = build_stages(cfg, registry)
        for stage in stages:
            stage.preflight()
    except StageError as exc:
        report.error = str(exc)
        sessions.failed_before_stages(cfg, report, time.perf_counter() - started)
        return report

    context = StageContext(cfg=cfg)
    if not any(stage.uses_tracking for stage in stages):
        _run_untracked(stages, context, report)
        return report

    try:
        session = sessions.open_session(cfg)
    except StageError as exc:
        report.error = str(exc)
        return report
    report.tracking_uri = session.tracking_uri
    report.experiment_id = session.experiment_id
    report.raises_on_failure = session.raises_on_failure
    try:
        with session.parent_run() as parent_id:
            report.parent_run_id = context.parent_run_id = parent_id
            for stage in stages:
                with session.stage_run(stage.name, enabled=stage.uses_tracking) as stage_run:
                    result = _run_stage(stage, context, session.explain)
                    result.run_id = stage_run.run_id
                    go_on = _record(result, context, report)  # kept even if closing its run fails
                    stage_run.finish(result)
                if not go_on:
                    break
            session.finish(report, time.perf_counter() - started)
    except Exception as exc:  # the tracking store itself failed while the runs were recorded or closed
        log.debug("recording the runs failed", exc_info=True)
        cause = session.explain(exc)
        if not report.error:
            report.error = cause
        elif cause not in report.error:
            report.error += f" (nor could its runs be closed: {cause})"
        else:
            report.error += " (its runs could not be closed either)"
    return report


def _run_untracked(stages: list[Stage], context: StageContext, report: LifecycleReport) -> None:
    for stage in stages:
        if not _record(_run_stage(stage, context), context, report):
            return
