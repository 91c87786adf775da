from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from pytest_bdd import given, parsers, scenarios, then

from lifecycle import tags

scenarios("deploy.feature")

MODEL = "langchain-e2e-model"


def versions(workspace) -> list[str]:
    return sorted(v.version for v in workspace.client().search_model_versions(f"name='{MODEL}'"))


@given("I note the registry", target_fixture="noted")
def note_registry(workspace) -> dict:
    return {
        "versions": versions(workspace),
        "challenger": workspace.client().get_model_version_by_alias(MODEL, "challenger").version,
    }


@then(parsers.parse('registered model "{name}" has {count:d} version, with the alias "{alias}" on version {version}'))
def registry_holds(workspace, name, count, alias, version):
    assert len(workspace.client().search_model_versions(f"name='{name}'")) == count
    assert str(workspace.client().get_model_version_by_alias(name, alias).version) == version


@then("the registered version loads and answers a plain string, a dict, a list and a DataFrame")
def registered_model_answers(workspace):
    workspace.client()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    params = {"max_new_tokens": 8}
    for model_input, count in [
        ("What is Python?", 1),
        ({"question": "What is Python?"}, 1),
        (["What is Python?", "What is the capital of France?"], 2),
        (pd.DataFrame({"question": ["What is Python?"]}), 1),
    ]:
        answers = model.predict(model_input, params=params)
        assert len(answers) == count and all(a.strip() for a in answers), (model_input, answers)


@then(parsers.parse("its serving input example is the smoke request, with the smoke check's {tokens:d} new tokens"))
def input_example_is_smoke_request(workspace, tokens, tmp_path):
    client = workspace.client()
    version = client.get_model_version_by_alias(MODEL, "challenger")
    folder = client.get_model_version_download_uri(MODEL, version.version)
    path = mlflow.artifacts.download_artifacts(f"{folder}/serving_input_example.json", dst_path=str(tmp_path))
    example = json.loads(Path(path).read_text())
    assert example == {
        "dataframe_split": {"columns": ["question"], "data": [["What is machine learning?"]]},
        "params": {"max_new_tokens": tokens},
    }, example


@then("the registry is as I noted it, and the failed deploy run is marked FAILED with the smoke prediction")
def registry_unchanged(workspace, noted):
    assert versions(workspace) == noted["versions"]
    assert workspace.client().get_model_version_by_alias(MODEL, "challenger").version == noted["challenger"]
    latest = workspace.stage_runs("deploy")[0]
    assert latest.info.status == "FAILED"
    assert "smoke prediction" in latest.data.tags[tags.ERROR]
