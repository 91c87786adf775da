"""monitor: how the served champion does on real traffic, against its own evaluation.

Reads the server's traces of the champion version (``serving.http.tracing``) for a window (``monitor.since`` and
``monitor.until``; by default since the last monitor run ended, or the last day), scores each with the offline
scorers that need no expected answer (non-empty, within length, relevance: ``lifecycle.monitoring``) and, with
``experiment.judge`` set, the judges that need none either (RelevanceToQuery and the guidelines), writes each score
onto its trace as an assessment (a judge's with its rationale), and logs the run's metrics: counts, latency and
time-to-first-token percentiles, token totals, the share of positive feedback, and each score's mean, so they chart
over successive monitor runs. The means are compared with the champion's own evaluation (the latest run that scored
that version on the evaluation set: ``mode=promote``'s; where there is none, the monitor scores the champion on it
now, in a nested run, as mode=promote would): a mean below it by more than ``monitor.margins.<score>`` (else
``monitor.default_margin``) fails the stage, with the numbers, as a failed ``mode=test`` does.

With ``monitor.harvest=true`` the questions that got negative feedback or an answer below the test stage's minimums
(``lifecycle.monitoring.harvest``) join the evaluation set (``lifecycle.integrations.datasets.harvest``): each from its
trace, with the answer feedback corrected as the expected one, and the dataset's version moves, so the next
``mode=promote`` is judged on them too. The harvest comes before the comparison: a dropped champion still leaves
behind the questions it failed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lifecycle import monitoring, promotion, tags
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import (
    SHARED_EVALUATION_SET,
    aliased_version,
    champion_alias,
    check_judge,
    evaluation_set,
    record_judge,
    score_version,
)

STEADY, DROPPED, UNCOMPARED = tags.Monitoring.STEADY, tags.Monitoring.DROPPED, tags.Monitoring.UNCOMPARED


class MonitorStage(Stage):
    name = "monitor"

    def preflight(self) -> None:
        check_judge(self.cfg)

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
        per_pair = [self._score(one, run_id) for one in served]
        scores = [monitoring.trace_scores(pairs) for pairs in per_pair]
        metrics = monitoring.summary(served, scores)
        runs.log_metrics(metrics)
        lines = [
            f"version {version}: {len(served)} served traces from {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC, "
            f"{int(metrics['scored'])} scored, {int(metrics['errors'])} errors, {int(metrics['feedback'])} feedback",
        ]
        if settings.harvest:
            lines += self._harvest(context, served, per_pair)
        return self._compare(context, version, experiment, metrics, lines)

    def _score(self, served: monitoring.Served, run_id: str) -> list[dict[str, float | None]]:
        """Each answer's scores (the judges' beside the offline ones), written onto the trace as its means."""
        from lifecycle.integrations import judges, production

        cfg = self.cfg
        per_pair: list[dict[str, float | None]] = monitoring.pair_scores(served, cfg.eval.thresholds.max_answer_chars)
        rationales: dict[str, str] = {}
        if per_pair and judges.enabled(cfg.experiment.judge):
            given = judges.verdicts(cfg.experiment.judge, cfg.eval.guidelines, served.pairs)
            for scores, verdicts in zip(per_pair, given, strict=True):
                scores.update({name: value for name, (value, _) in verdicts.items()})
                rationales.update({name: why for name, (_, why) in verdicts.items() if why})
        if scored := monitoring.trace_scores(per_pair):
            production.record_scores(served.trace_id, scored, run_id, rationales if len(per_pair) == 1 else {})
        return per_pair

    def _harvest(self, context: StageContext, served, per_pair) -> list[str]:
        """The questions for the next evaluation set, added to it; what the summary says about them."""
        from lifecycle.integrations import datasets, runs

        current = evaluation_set(context)
        least = monitoring.minimums(self.cfg.eval.thresholds.min_relevance)
        found = monitoring.harvest(served, per_pair, least, [q.question for q in current.questions])
        grown = datasets.harvest(current, found)
        context.shared[SHARED_EVALUATION_SET] = grown
        runs.log_metrics({"harvested": len(found)})
        runs.set_tags({tags.HARVESTED_INTO: f"{grown.name}@{grown.version}"})
        if not found:
            return [f"harvest: nothing new for {current.name} (version {current.version} stays)"]
        return [
            f"harvest: {len(found)} question(s) added to {grown.name}, version {current.version} -> {grown.version}:",
            *(f"  {h.question!r} from trace {h.trace_id} ({'; '.join(h.reasons)})" for h in found),
        ]

    def _evaluation(self, context: StageContext, version: str, experiment: str) -> tuple[str, dict[str, float]]:
        """(run id, mean scores) of the champion's evaluation: the latest recorded, else one made now."""
        from lifecycle.integrations import production

        found = production.evaluation_of(experiment, version)
        if found is not None:
            return found
        record_judge(self.cfg)
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
