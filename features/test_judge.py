from __future__ import annotations

import mlflow
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from .conftest import Invocation, Server, Workspace, serving_command, start_server

scenarios("judge.feature")

KEY = "sk-judge-0123456789abcdef"  # the server's API key: the judge must send it
JUDGES = ("correctness", "relevance_to_query")


@pytest.fixture(scope="module")
def judge_servers():
    running: list[Server] = []
    yield running
    for server in running:
        server.stop()


@given(
    parsers.parse('"python -m serving" serves the champion as the judge, behind the API key in {variable}'),
    target_fixture="judge",
)
def judge_server(workspace: Workspace, judge_servers, tmp_path_factory, variable: str) -> Server:
    if not judge_servers:
        log = tmp_path_factory.mktemp("judge") / "server.log"
        judge_servers.append(start_server(workspace, {"SERVING_API_KEY": KEY}, log, serving_command()))
    return judge_servers[0]


@when(parsers.parse('I run "{command}" against the judge'), target_fixture="invocation")
def run_against_judge(workspace: Workspace, judge: Server, command: str) -> Invocation:
    return workspace.run(f"{command} experiment.judge.base_url={judge.base}/v1", env={"JUDGE_KEY": KEY})


def experiment_run(workspace: Workspace):
    return workspace.stage_runs("experiment")[0]


@then(
    parsers.parse(
        "it succeeds, and every judge call parsed: correctness/mean and relevance_to_query/mean are in the run"
    )
)
def judged(workspace: Workspace, invocation: Invocation):
    assert invocation.returncode == 0, invocation.explain()
    metrics = experiment_run(workspace).data.metrics
    assert all(f"{name}/mean" in metrics for name in JUDGES), sorted(metrics)


@then("each answer's trace holds the judges' verdicts with their rationales")
def rationales(workspace: Workspace):
    run = experiment_run(workspace)
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    verdicts = [a for trace in traces for a in trace.info.assessments if a.name in (*JUDGES, "concise", "on_topic")]
    assert len(verdicts) == 3 * 4, [(a.name, a.feedback) for a in verdicts]  # 3 answers, 4 judges
    for verdict in verdicts:
        assert verdict.feedback.error is None, (verdict.name, verdict.feedback.error)  # the call's JSON parsed
        assert verdict.rationale and verdict.rationale.strip(), verdict
        assert verdict.source.source_id == "openai:/langchain-e2e-model"


@then("the run records the judge's model and endpoint, and the key appears nowhere in the output or the run")
def recorded(workspace: Workspace, judge: Server, invocation: Invocation, tmp_path):
    run = experiment_run(workspace)
    assert run.data.params["judge_model"] == "langchain-e2e-model"
    assert run.data.params["judge_endpoint"] == f"{judge.base}/v1"
    assert KEY not in invocation.output
    assert KEY not in str(run.data.params) + str(run.data.tags)
    parent = workspace.client().get_run(run.data.tags["mlflow.parentRunId"])
    config = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config/resolved.yaml")
    assert KEY not in config and "key_env: JUDGE_KEY" in config
