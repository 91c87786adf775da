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


@then("the latest test run logged how many of the 8 bfloat16 answers are identical to float32")
def dtype_agreement_logged(workspace):
    metrics = workspace.stage_runs("test")[0].data.metrics
    identical = metrics["dtype_agreement/bfloat16/identical"]
    assert 0 <= identical <= 8
    if identical < 8:  # where some answers differ, the run says from which token on average
        assert 0 <= metrics["dtype_agreement/bfloat16/first_difference_mean"] <= 64
