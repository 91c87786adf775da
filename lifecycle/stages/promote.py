"""promote: the champion/challenger gate. Move ``champion`` to the challenger only if it is no worse.

The challenger (``deploy.alias``, set by mode=deploy) and the champion (``promote.alias``, what serve and export use)
answer the same evaluation set; both answer sets are scored by the experiment's scorers, each in a nested run named
after its role and version. ``lifecycle.promotion`` decides score by score, within ``promote.margins``. The promote
run keeps the explanation: a per-question table (both answers, both scores), a chart of the mean scores, and the
verdict as tags; each version gets the outcome as tags too. With no champion yet, the challenger becomes the champion
without a comparison. A refused challenger fails the stage (exit 1: the gate said no) and leaves the champion alone.
"""

from __future__ import annotations

from lifecycle import promotion, tags
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import (
    aliased_version,
    champion_alias,
    check_judge,
    evaluation_set,
    record_judge,
    score_version,
)

ROLES = ("champion", "challenger")
PROMOTED, REFUSED, UNCHANGED = tags.Promotion.PROMOTED, tags.Promotion.REFUSED, tags.Promotion.UNCHANGED


class PromoteStage(Stage):
    name = "promote"

    def preflight(self) -> None:
        check_judge(self.cfg)

    def run(self, context: StageContext) -> StageResult:
        from lifecycle.integrations import packaging, runs

        cfg = self.cfg
        name, champion_name = cfg.registered_model_name, champion_alias(cfg)
        challenger = aliased_version(cfg, cfg.deploy.alias)
        champion = packaging.alias_version(name, champion_name)
        runs.set_tags({tags.CHALLENGER_VERSION: challenger, tags.CHAMPION_VERSION: champion or ""})
        if champion is None or champion == challenger:
            return self._unopposed(challenger, champion)

        versions = {"champion": champion, "challenger": challenger}
        questions = evaluation_set(context).questions
        record_judge(cfg)
        answered = {role: score_version(cfg, role, version, questions) for role, version in versions.items()}
        means = {role: promotion.score_means(scores.metrics) for role, (_, scores) in answered.items()}
        if unknown := promotion.unknown_margins(cfg.promote.margins, set(means["champion"])):
            raise StageError(
                f"promote.margins names {unknown}, which no scorer produced; the scores are "
                f"{sorted(means['champion'])}. Nothing was promoted."
            )
        verdict = promotion.decide(
            means["champion"], means["challenger"], cfg.promote.margins, cfg.promote.default_margin
        )
        self._explain(versions, questions, answered, verdict)
        lines = ["scores, challenger against champion:", *(f"  {c.describe()}" for c in verdict.comparisons)]
        if not verdict.promoted:
            self._record(False, challenger, champion)
            lost = ", ".join(c.score for c in verdict.losses)
            raise StageError(
                f"challenger version {challenger} refused: worse than champion version {champion} by more than the "
                f"margin on {lost}. {champion_name!r} stays on version {champion}.",
                lines=[f"challenger version {challenger} refused; {champion_name!r} stays on {champion}", *lines],
            )
        packaging.set_alias(name, champion_name, challenger)  # first: the versions' tags then tell what happened
        self._record(True, challenger, champion)
        return StageResult(
            stage=self.name,
            outputs={"verdict": PROMOTED, "champion_version": challenger, "previous_champion": champion},
            lines=[
                f"challenger version {challenger} promoted: no worse than version {champion} on any score; "
                f"{champion_name!r} -> {challenger} (was {champion})",
                *lines,
            ],
        )

    def _unopposed(self, challenger: str, champion: str | None) -> StageResult:
        from lifecycle.integrations import packaging, runs

        name, champion_name = self.cfg.registered_model_name, champion_alias(self.cfg)
        if champion == challenger:
            runs.set_tags({tags.VERDICT: UNCHANGED})
            line = f"version {challenger} is already {champion_name!r}: nothing to decide"
            return StageResult(
                stage=self.name, outputs={"verdict": UNCHANGED, "champion_version": challenger}, lines=[line]
            )
        packaging.set_alias(name, champion_name, challenger)
        runs.set_tags({tags.VERDICT: PROMOTED})
        self._record(True, challenger, None)
        return StageResult(
            stage=self.name,
            outputs={"verdict": PROMOTED, "champion_version": challenger, "previous_champion": None},
            lines=[f"no {champion_name!r} yet: challenger version {challenger} promoted without a comparison"],
        )

    def _explain(self, versions: dict[str, str], questions, answered: dict, verdict: promotion.Verdict) -> None:
        """The per-question table, the chart, the mean scores and the verdict, in the promote run."""
        import pandas as pd

        from lifecycle.integrations import runs

        sides = {role: (versions[role], answers, scores.per_question) for role, (answers, scores) in answered.items()}
        rows = promotion.table_rows([q.question for q in questions], sides)
        runs.log_table(pd.DataFrame(rows), "promote/questions.json")
        runs.log_figure(promotion.chart(versions, verdict), "promote/scores.png")
        runs.log_metrics(
            {
                f"{role}/{c.score}": getattr(c, role)
                for c in verdict.comparisons
                for role in ROLES
                if getattr(c, role) is not None
            }
        )
        runs.set_tags({tags.VERDICT: PROMOTED if verdict.promoted else REFUSED})

    def _record(self, promoted: bool, challenger: str, champion: str | None) -> None:
        """The outcome as tags on both versions, with the run that explains it."""
        from lifecycle.integrations import packaging, runs

        name, run_id = self.cfg.registered_model_name, runs.active_run_id()
        packaging.tag_version(
            name,
            challenger,
            {
                tags.PROMOTION: PROMOTED if promoted else REFUSED,
                tags.PROMOTION_AGAINST: champion or "",
                tags.PROMOTION_RUN: run_id,
            },
        )
        if champion is not None:
            packaging.tag_version(
                name,
                champion,
                {
                    tags.PROMOTION: tags.Promotion.REPLACED if promoted else tags.Promotion.KEPT,
                    tags.PROMOTION_AGAINST: challenger,
                    tags.PROMOTION_RUN: run_id,
                },
            )
