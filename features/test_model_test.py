from __future__ import annotations

import mlflow
from pytest_bdd import scenarios, then

scenarios("model_test.feature")


@then("the latest test run logged fact_agreement_mean and an answers table")
def latest_test_run_logged(workspace):
    run = workspace.stage_runs("test")[0]
    assert run.data.metrics["fact_agreement_mean"] >= 0.6
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/test/answers.json")
    answers = [row[table["columns"].index("answer")] for row in table["data"]]
    assert len(answers) == 8 and all(a.strip() for a in answers)
