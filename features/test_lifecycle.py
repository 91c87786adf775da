from __future__ import annotations

import mlflow
import yaml
from pytest_bdd import parsers, scenarios, then

scenarios("lifecycle.feature")


def parent_run(workspace):
    runs = workspace.runs("tags.`lifecycle.mode` = 'all'")
    assert len(runs) == 1
    return runs[0]


@then(parsers.parse("the parent run has nested runs {names}"))
def nested_stage_runs(workspace, names):
    parent = parent_run(workspace)
    stage_runs = workspace.child_runs(parent)
    assert sorted(r.info.run_name for r in stage_runs) == sorted(n.strip() for n in names.split(","))
    assert all(r.info.status == "FINISHED" for r in stage_runs)


@then("the parent run logged the resolved config with status success")
def resolved_config(workspace):
    parent = parent_run(workspace)
    assert parent.data.tags["lifecycle.status"] == "success"
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config/resolved.yaml"))
    assert config["mode"]["stages"] == ["experiment", "deploy", "test", "promote", "serve"]
    assert config["data_dir"] == str(workspace.data_dir)
