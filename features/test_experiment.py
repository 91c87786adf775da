from __future__ import annotations

import mlflow
from pytest_bdd import parsers, scenarios, then

scenarios("experiment.feature")


def experiment_run(workspace, invocation):
    runs = workspace.stage_runs("experiment")
    assert len(runs) == 1, invocation.explain()
    return runs[0]


@then(parsers.parse("the experiment run has a nested run for each of the {count:d} questions"))
def nested_question_runs(workspace, invocation, count):
    run = experiment_run(workspace, invocation)
    names = sorted(r.info.run_name for r in workspace.child_runs(run))
    assert names == [f"question-{i:02d}" for i in range(1, count + 1)]


@then("each question run logged latency_s, tokens_generated and tokens_per_s and its answer")
def question_run_contents(workspace, invocation):
    run = experiment_run(workspace, invocation)
    for child in workspace.child_runs(run):
        assert {"latency_s", "tokens_generated", "tokens_per_s"} <= set(child.data.metrics)
        assert child.data.metrics["tokens_generated"] > 0
        answer = mlflow.artifacts.load_text(f"runs:/{child.info.run_id}/answer.txt")
        assert answer.strip(), f"empty answer in {child.info.run_name}"


@then(parsers.parse("the experiment run's traces include {names}"))
def traced_phases(workspace, invocation, names):
    run = experiment_run(workspace, invocation)
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    roots = {t.data.spans[0].name for t in traces if t.data.spans}
    wanted = {n.strip() for n in names.replace(" and ", ", ").split(",")}
    assert wanted <= roots, f"traced: {sorted(roots)}"


@then(parsers.parse("the prompt registry holds {names}"))
def prompts_registered(workspace, invocation, names):
    workspace.client()
    for name in (n.strip() for n in names.replace(" and ", ", ").split(",")):
        prompt = mlflow.genai.load_prompt(f"prompts:/{name}@latest")
        assert "{{question}}" in str(prompt.template)


@then(parsers.parse('the alias "{alias}" of "{name}" points to its latest version'))
def prompt_alias(workspace, invocation, alias, name):
    workspace.client()
    assert mlflow.genai.load_prompt(f"prompts:/{name}@{alias}").version == (
        mlflow.genai.load_prompt(f"prompts:/{name}@latest").version
    )


@then(parsers.parse("the experiment run has the metrics {names}"))
def evaluation_metrics(workspace, invocation, names):
    run = experiment_run(workspace, invocation)
    for name in (n.strip() for n in names.split(",")):
        assert name in run.data.metrics, f"{name} missing from {sorted(run.data.metrics)}"
    assert run.data.metrics["non_empty/mean"] == 1.0
