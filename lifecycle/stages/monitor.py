"""monitor: how the served champion does on real traffic, against its own evaluation.

Reads the server's traces of the champion version (``serving.tracing``) for a window (``monitor.since`` and
``monitor.until``; by default since the last monitor run ended, or the last day), scores each with the offline
scorers that need no expected answer (non-empty, within length, relevance: ``lifecycle.monitoring``), writes each
score onto its trace as an assessment, and logs the run's metrics: counts, latency and time-to-first-token
percentiles, token totals, the share of positive feedback, and each score's mean, so they chart over successive
monitor runs. The means are compared with the champion's own evaluation (the latest run that scored that version on
the evaluation set: ``mode=promote``'s; where there is none, the monitor scores the champion on it now, in a nested
run, as mode=promote would): a mean below it by more than ``monitor.margins.<score>`` (else
``monitor.default_margin``) fails the stage, with the numbers, as a failed ``mode=test`` does.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lifecycle import monitoring, promotion, tags
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import aliased_version, champion_alias, evaluation_set, score_version

STEADY, DROPPED, UNCOMPARED = "steady", "dropped", "uncompared"  # the monitor run's verdict tag


class MonitorStage(Stage):
    name = "monitor"

    def run(self, context: StageContext) -> StageResult:
        from lifecycle.integrations import production, runs

        cfg, settings = self.cfg, self.cfg.monitor
        version = aliased_version(cfg, champion_alias(cfg))
        experiment, run_id = runs.experiment_id(), runs.active_run_id()
        try:
            start, end = monitoring.window(
                settings.since, settings.until, production.last_until(experiment), datetime.now(timezone.utc)
            )
        except ValueError as exc:
            raise StageError(f"monitor.since/monitor.until: {exc}; give ISO 8601 times or epoch milliseconds") from None
        runs.set_tags(
            {tags.MONITOR_SINCE: start.isoformat(), tags.MONITOR_UNTIL: end.isoformat(), tags.MODEL_VERSION: version}
        )
        traces = production.served_traces(
            experiment, cfg.registered_model_name, version, start, end, settings.max_traces
        )
        served = [production.as_served(trace) for trace in traces]
        scores = [monitoring.score(s, cfg.eval.thresholds.max_answer_chars) for s in served]
        for one, scored in zip(served, scores, strict=True):
            if scored:
                production.record_scores(one.trace_id, scored, run_id)
        metrics = monitoring.summary(served, scores)
        runs.log_metrics(metrics)
        lines = [
            f"version {version}: {len(served)} served traces from {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC, "
            f"{int(metrics['scored'])} scored, {int(metrics['errors'])} errors, {int(metrics['feedback'])} feedback",
        ]
        return self._compare(context, version, experiment, metrics, lines)

    def _evaluation(self, context: StageContext, version: str, experiment: str) -> tuple[str, dict[str, float]]:
        """(run id, mean scores) of the champion's evaluation: the latest recorded, else one made now."""
        from lifecycle.integrations import production

        found = production.evaluation_of(experiment, version)
        if found is not None:
            return found
        score_version(self.cfg, "champion", version, evaluation_set(context).questions)  # a nested run, tagged
        return production.evaluation_of(experiment, version)

    def _compare(self, context, version: str, experiment: str, metrics: dict, lines: list[str]) -> StageResult:
        from lifecycle.integrations import runs

        settings = self.cfg.monitor
        monitored = promotion.score_means(metrics)
        if not monitored:
            runs.set_tags({tags.VERDICT: UNCOMPARED})
            lines.append("not compared: no trace held text to score (served with SERVING_TRACE_CONTENT=false?)")
            return StageResult(stage=self.name, outputs={"verdict": UNCOMPARED, **metrics}, lines=lines)
        against, evaluated = self._evaluation(context, version, experiment)
        champion = {name: value for name, value in evaluated.items() if name in monitored}
        if unknown := promotion.unknown_margins(settings.margins, set(champion)):
            raise StageError(f"monitor.margins names {unknown}, which the monitor does not score: {sorted(champion)}")
        verdict = promotion.decide(champion, monitored, settings.margins, settings.default_margin)
        runs.log_metrics({f"evaluation/{name}": value for name, value in champion.items()})
        compared = [f"  {c.describe()}" for c in verdict.comparisons]
        lines += [f"production against the evaluation of version {version} (run {against}):", *compared]
        runs.set_tags({tags.MONITOR_AGAINST: against, tags.VERDICT: STEADY if verdict.promoted else DROPPED})
        if not verdict.promoted:
            lost = ", ".join(c.score for c in verdict.losses)
            raise StageError(
                f"production scores of version {version} dropped below its evaluation by more than the margin on "
                f"{lost}",
                lines=lines,
            )
        return StageResult(stage=self.name, outputs={"verdict": STEADY, **metrics}, lines=lines)
