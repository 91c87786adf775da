"""test: load the challenger, ``models:/<name>@<deploy.alias>``, answer the evaluation questions, validate the answers.

Validation uses ``eval.thresholds`` (non-empty rate, maximum length, mean fact agreement, mean relevance). Results go
to the stage's run as metrics and a table; any missed threshold fails the stage with the list of what was missed.
With ``test.compare_dtype=bfloat16`` (or ``int8``) the stage also answers the questions through the server's engine in
float32 and in that dtype, and logs how they agree (``serving.engine.agreement``): identical answers, where the others
first differ.
"""

from __future__ import annotations

from lifecycle import scoring, tags
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import aliased_version, evaluation_set, model_uri


class ModelTestStage(Stage):
    name = "test"

    def run(self, context: StageContext) -> StageResult:
        import pandas as pd

        from lifecycle.integrations import packaging, runs

        cfg = self.cfg
        version = aliased_version(cfg, cfg.deploy.alias)  # the challenger: mode=promote decides what ships
        uri = model_uri(cfg, cfg.deploy.alias)
        questions = evaluation_set(context).questions
        answers = packaging.answer_questions(uri, [q.question for q in questions])
        scored = [scoring.score(q.question, a, q.expected_facts) for q, a in zip(questions, answers, strict=True)]
        summary = scoring.summarize(scored)
        runs.log_metrics(summary)
        runs.set_tags({tags.MODEL_URI: uri, tags.MODEL_VERSION: version})
        runs.log_table(
            pd.DataFrame([vars(s) for s in scored]).assign(expected_facts=[list(q.expected_facts) for q in questions]),
            "test/answers.json",
        )
        lines = []
        if cfg.test.compare_dtype is not None:
            compared, line = self._compare_dtype(uri, cfg.test.compare_dtype.value, [q.question for q in questions])
            runs.log_metrics(compared)
            summary.update(compared)
            lines.append(line)
        failures = scoring.validate(scored, cfg.eval.thresholds)
        if failures:
            raise StageError(f"{uri} (version {version}) failed validation: " + "; ".join(failures))
        return StageResult(
            stage=self.name,
            metrics=summary,
            outputs={"tested_model_uri": uri, "tested_version": version},
            lines=[
                f"{uri} (version {version}): {len(scored)} answers passed validation",
                f"fact agreement {summary['fact_agreement_mean']:.2f}, relevance {summary['relevance_mean']:.2f}",
                *lines,
            ],
        )

    @staticmethod
    def _compare_dtype(uri: str, dtype: str, questions: list[str]) -> tuple[dict[str, float], str]:
        from core.artifacts import local_artifacts
        from serving.engine import agreement
        from serving.engine.loader import from_pyfunc_dir

        with local_artifacts(uri) as folder:
            spec = from_pyfunc_dir(folder)
            reference, _ = agreement.run_dtype(spec, "float32", questions)
            other, _ = agreement.run_dtype(spec, dtype, questions)
        result = agreement.compare(reference, other)
        metrics = {f"dtype_agreement/{dtype}/identical": result["identical"]}
        differ = ""
        if result["first_difference_mean"] is not None:
            metrics[f"dtype_agreement/{dtype}/first_difference_mean"] = result["first_difference_mean"]
            differ = f"; the others first differ at token {result['first_difference_mean']:.1f} on average"
        return (
            metrics,
            f"{dtype} against float32: {result['identical']} of {result['questions']} answers identical{differ}",
        )
