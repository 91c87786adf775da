from __future__ import annotations

import json

import mlflow
from pytest_bdd import parsers, scenarios, then

from .conftest import EXPERIMENT

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


@then(
    parsers.parse(
        "its prediction is a trace of the {count:d} questions, a span for each with its answer and token counts, "
        'tagged with version {version} and prompt "{prompt}", and holds no object\'s repr'
    )
)
def prediction_traced(workspace, count, version, prompt):
    client = workspace.client()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    traces = mlflow.search_traces(
        locations=[experiment], filter_string="trace.name = 'predict'", order_by=["timestamp_ms DESC"],
        max_results=1, return_type="list",
    )  # fmt: skip
    (trace,) = traces
    spans = sorted(trace.data.spans, key=lambda span: (span.parent_id is not None, span.name))
    root, children = spans[0], spans[1:]
    questions = root.inputs["questions"]
    assert len(questions) == count and all(isinstance(q, str) and q for q in questions), root.inputs
    assert len(children) == count and [c.inputs["question"] for c in children] == questions
    assert root.outputs == [c.outputs for c in children] and all(isinstance(a, str) and a for a in root.outputs)
    assert all(c.attributes["gen_ai.usage.output_tokens"] > 0 for c in children)
    tags = trace.info.tags
    assert tags["lifecycle.model.name"] == "langchain-e2e-model" and tags["lifecycle.model.version"] == version, tags
    assert "challenger" in tags["lifecycle.model.alias"] and tags["lifecycle.prompt.name"] == prompt, tags
    assert trace.info.token_usage["input_tokens"] > 0 and trace.info.token_usage["output_tokens"] > 0
    dumped = json.dumps(trace.to_dict())
    assert " object at 0x" not in dumped and "PythonModelContext" not in dumped, dumped[:3000]
