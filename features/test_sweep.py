from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import yaml
from pytest_bdd import given, parsers, scenarios, then, when

from lifecycle import tags

from .conftest import Invocation, Workspace, evaluation_datasets, summary_table, sweep_run, template_without_question

scenarios("sweep.feature")

SCORES = {"fact_agreement/mean", "answer_relevance/mean", "non_empty/mean", "within_length/mean"}


@given(parsers.parse('an extra prompt template "{name}" without {{{{question}}}}'), target_fixture="extra_conf")
def extra_template(tmp_path, name) -> Path:
    return template_without_question(tmp_path / "extra_conf", name)


@when(parsers.parse('I sweep "{command}"'), target_fixture="invocation")
def sweep(workspace: Workspace, command) -> Invocation:
    return workspace.run(command)


@when(parsers.parse('I sweep "{command}" with the extra templates'), target_fixture="invocation")
def sweep_with_extra(workspace: Workspace, extra_conf: Path, command) -> Invocation:
    return workspace.run(f"{command} hydra.searchpath=[file://{extra_conf}]")


@then(
    parsers.parse(
        "it succeeds, and the sweep's run has {count:d} child runs, one per template, with the same scores logged"
    )
)
def one_child_per_template(workspace: Workspace, invocation: Invocation, count):
    children = one_child_per_job(workspace, invocation, count)
    assert {c.data.params["prompt"] for c in children} == {"qa-concise", "qa-detailed", "qa-step-by-step"}


def one_child_per_job(workspace: Workspace, invocation: Invocation, count: int) -> list:
    """The sweep succeeded with ``count`` child runs, jobs 0.., each of this sweep and with every score."""
    assert invocation.returncode == 0, invocation.explain()
    parent = sweep_run(workspace)
    children = workspace.child_runs(parent)
    assert len(children) == count, [c.info.run_name for c in children]
    assert all(set(c.data.metrics) >= SCORES for c in children)
    assert {c.data.tags["lifecycle.sweep_id"] for c in children} == {parent.data.tags["lifecycle.sweep_id"]}
    assert sorted(int(c.data.tags["lifecycle.sweep_job"]) for c in children) == list(range(count))
    return children


def summary_and_chart(workspace: Workspace) -> None:
    run = sweep_run(workspace)
    names = {a.path for a in workspace.client().list_artifacts(run.info.run_id, "sweep")}
    assert names == {"sweep/summary.json", "sweep/summary.txt", "sweep/scores.png"}, names
    chart = Path(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/sweep/scores.png"))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = summary_table(workspace)
    assert len(rows) == 3 and all(row["status"] == "completed" for row in rows)
    assert [row["rank"] for row in rows] == [1, 2, 3]


@then(
    parsers.parse(
        "the sweep's run holds the summary table and the chart, and names the best template, whose prompt version "
        'gets the alias "{alias}"'
    )
)
def best_alias(workspace: Workspace, invocation: Invocation, alias):
    summary_and_chart(workspace)
    match = re.search(rf"prompt alias '{alias}' -> prompts:/([\w-]+)/(\d+)", invocation.output)
    assert match, invocation.explain()
    name, version = match.groups()
    workspace.client()  # points the registry at this workspace
    assert str(mlflow.genai.load_prompt(f"prompts:/{name}@{alias}").version) == version
    best = summary_table(workspace)[0]
    assert best["prompt"] == name and f"best: job {best['job']} ({best['label']})" in invocation.output


@then(parsers.parse("the model was loaded once and reused by the other {count:d} jobs"))
def loaded_once(workspace: Workspace, invocation: Invocation, count):
    assert invocation.output.count("(loads in this process: 1)") == 1, invocation.explain()
    assert "loads in this process: 2" not in invocation.output
    assert invocation.output.count("loaded by an earlier job of this process") == count
    reused = sorted(c.data.tags["lifecycle.model_reused"] for c in workspace.child_runs(sweep_run(workspace)))
    assert reused == ["false"] + ["true"] * count


@then(parsers.parse('every job\'s run records the evaluation dataset "{name}" version {version}, which exists once'))
def jobs_record_the_dataset(workspace: Workspace, name: str, version: str):
    children = workspace.child_runs(sweep_run(workspace))
    assert {(c.data.tags[tags.DATASET], c.data.tags[tags.DATASET_VERSION]) for c in children} == {(name, version)}
    assert len(evaluation_datasets(workspace, name)) == 1  # synced by the sweep's start, not by each job


@then(
    parsers.parse(
        "it succeeds, and the sweep's run has {count:d} child runs, one per trial, with the same scores logged"
    )
)
def one_child_per_trial(workspace: Workspace, invocation: Invocation, count):
    one_child_per_job(workspace, invocation, count)


@then(
    parsers.parse(
        "Optuna's best value is the best trial's \"{metric}\", and its best parameters are that trial's overrides"
    )
)
def optuna_agrees(workspace: Workspace, metric: str):
    (results,) = (workspace.data_dir / "logs" / "hydra-multirun").glob("*/optimization_results.yaml")
    verdict = yaml.safe_load(results.read_text())
    children = workspace.child_runs(sweep_run(workspace))
    best = max(children, key=lambda c: c.data.metrics[metric])
    assert verdict["best_value"] == best.data.metrics[metric], (verdict, [c.data.metrics for c in children])
    overrides = best.data.tags[tags.OVERRIDES].split()
    if [c.data.metrics[metric] for c in children].count(verdict["best_value"]) == 1:  # (tied: either may be Optuna's)
        assert {f"{name}={value}" for name, value in verdict["best_params"].items()} <= set(overrides), overrides
    assert summary_table(workspace)[0][metric] == pytest.approx(verdict["best_value"])  # the sweep ranks alike
