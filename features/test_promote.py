from __future__ import annotations

import json

import mlflow
from pytest_bdd import given, parsers, scenarios, then, when

from features.conftest import Invocation, Workspace
from lifecycle import tags

scenarios("promote.feature")

MODEL = "langchain-e2e-model"


def deploy(workspace: Workspace, overrides: str) -> None:
    invocation = workspace.run(f"python main.py mode=deploy eval=quick {overrides}")
    assert invocation.returncode == 0, invocation.explain()


@given(parsers.parse('a champion deployed with "{overrides}"'), target_fixture="workspace")
def champion(tmp_path, model_cache, overrides: str) -> Workspace:
    """Version 1, deployed with ``overrides`` and promoted (no champion before: no comparison)."""
    workspace = Workspace(tmp_path / "data", model_cache)
    deploy(workspace, overrides)
    promoted = workspace.run("python main.py mode=promote eval=quick")
    assert promoted.returncode == 0, promoted.explain()
    assert "no 'champion' yet: challenger version 1 promoted without a comparison" in promoted.output
    return workspace


@when(parsers.parse('a challenger deployed with "{overrides}" meets it in "{command}"'), target_fixture="invocation")
def challenger(workspace: Workspace, overrides: str, command: str) -> Invocation:
    """Version 2, deployed with ``overrides`` (mode=deploy sets "challenger" on it), then ``command``."""
    deploy(workspace, overrides)
    return workspace.run(command)


TAGGED = '"champion" is on version {version}, version {other} is tagged "{outcome}" and version {first} "{then}"'
EXPLAINED = "the promote run holds a table of both answers to the {count:d} questions and a chart of the scores"


@then(parsers.parse(TAGGED))
def aliases_and_tags(workspace: Workspace, version: str, other: str, outcome: str, first: str, then: str):
    client = workspace.client()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == version
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"  # promote never moves it
    (run,) = workspace.stage_runs("promote")[:1]
    for number, expected, against in ((other, outcome, first), (first, then, other)):
        version_tags = client.get_model_version(MODEL, number).tags
        assert version_tags[tags.PROMOTION] == expected, version_tags
        assert version_tags[tags.PROMOTION_AGAINST] == against
        assert version_tags[tags.PROMOTION_RUN] == run.info.run_id


@then(parsers.parse(EXPLAINED))
def explained(workspace: Workspace, count: int, tmp_path):
    workspace.client()  # points this process at the workspace's store
    run = workspace.stage_runs("promote")[0]
    assert run.data.tags[tags.VERDICT] == "refused"
    assert run.data.metrics["champion/fact_agreement"] == 1.0 and run.data.metrics["challenger/fact_agreement"] == 0.0
    folder = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="promote", dst_path=tmp_path)
    table = json.loads((tmp_path / "promote" / "questions.json").read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert len(rows) == count, rows
    for row in rows:
        assert row["champion_version"] == "1" and row["challenger_version"] == "2"
        assert len(row["champion_answer"]) > len(row["challenger_answer"]) > 0, row  # 3 new tokens against 64
        assert {"champion/fact_agreement", "challenger/fact_agreement", "challenger/answer_relevance"} <= set(row)
    assert (tmp_path / "promote" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", folder
    nested = {r.info.run_name for r in workspace.child_runs(run)}
    assert nested == {"champion-v1", "challenger-v2"}, nested


@then(parsers.parse('"{command}" names "{text}"'))
def serve_names(workspace: Workspace, command: str, text: str):
    invocation = workspace.run(command)
    assert invocation.returncode == 0 and text in invocation.output, invocation.explain()
