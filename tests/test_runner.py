"""The runner against a real embedded MLflow backend, with small stages defined here."""

from __future__ import annotations

import mlflow
import pytest
import yaml

from lifecycle import runner, summary
from lifecycle.registry import StageRegistry
from lifecycle.stage import Stage, StageError, StageResult


class Hello(Stage):
    name = "hello"

    def run(self, context):
        mlflow.log_param("greeting", "hi")
        return StageResult(stage=self.name, metrics={"answer": 42.0}, outputs={"said": "hi"}, lines=["said hi"])


class Boom(Stage):
    name = "boom"

    def run(self, context):
        raise StageError("the widget is missing: run `make widget` first")


class Never(Stage):
    name = "never"

    def run(self, context):  # pragma: no cover - must not run after a failure
        raise AssertionError("ran after a failed stage")


class Sees(Stage):
    name = "sees"
    uses_tracking = False

    def run(self, context):
        return StageResult(stage=self.name, lines=[f"saw {context.output('said')}"])


@pytest.fixture
def registry():
    return StageRegistry({"hello": Hello, "boom": Boom, "never": Never, "sees": Sees})


@pytest.fixture
def cfg_with(compose_cfg, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")

    def _cfg(*stages: str):
        cfg = compose_cfg("mode=experiment", "experiment.judge.model=very-secret-value")
        cfg.mode.stages = list(stages)
        return cfg

    return _cfg


def client_for(cfg):
    mlflow.set_tracking_uri(cfg.tracking_uri)
    return mlflow.MlflowClient(cfg.tracking_uri)


def test_parent_run_with_nested_stage_runs_and_redacted_config(cfg_with, registry):
    cfg = cfg_with("hello", "sees")
    report = runner.run(cfg, registry)
    assert not report.failed, report.error
    client = client_for(cfg)
    parent = client.get_run(report.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lifecycle.status"] == "success"
    stage_run = client.get_run(report.results[0].run_id)
    assert stage_run.data.tags["mlflow.parentRunId"] == report.parent_run_id
    assert stage_run.data.metrics["answer"] == 42.0
    assert report.results[1].lines == ["saw hi"]  # a later stage sees what an earlier one published
    config_text = mlflow.artifacts.load_text(f"runs:/{report.parent_run_id}/config/resolved.yaml")
    assert "very-secret-value" not in config_text
    assert yaml.safe_load(config_text)["experiment"]["judge"]["model"] == "***"


def test_a_failing_stage_stops_the_invocation_and_marks_the_runs(cfg_with, registry):
    cfg = cfg_with("hello", "boom", "never")
    report = runner.run(cfg, registry)
    assert report.failed
    assert "stage 'boom' failed: the widget is missing" in report.error
    assert [r.stage for r in report.results] == ["hello", "boom"]
    client = client_for(cfg)
    parent = client.get_run(report.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["lifecycle.status"] == "failed"
    assert "make widget" in parent.data.tags["lifecycle.error"]
    assert client.get_run(report.results[1].run_id).info.status == "FAILED"
    assert client.get_run(report.results[0].run_id).info.status == "FINISHED"
    text = summary.render(report, ui_port=5050)
    assert "FAILED" in text and "make widget" in text


def test_unknown_stage_fails_before_any_run(cfg_with, registry):
    report = runner.run(cfg_with("hello", "nope"), registry)
    assert report.failed and "Available stages: boom, hello, never, sees" in report.error
    assert report.parent_run_id is None


def test_untracked_modes_open_no_run(cfg_with, registry, tmp_path):
    cfg = cfg_with("sees")
    report = runner.run(cfg, registry)
    assert not report.failed and report.parent_run_id is None
    assert not (tmp_path / "data" / "mlflow.db").exists()


def test_an_unusable_s3_store_fails_before_any_run(cfg_with, registry, tmp_path, monkeypatch):
    from devservices.ports import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    cfg = cfg_with("hello")
    cfg.storage.kind, cfg.storage.bucket = "s3", "mlflow"
    cfg.storage.endpoint_url = closed = f"http://127.0.0.1:{free_port()}"
    report = runner.run(cfg, registry)
    assert report.failed and f"cannot reach the S3 endpoint {closed}" in report.error
    assert report.parent_run_id is None and not (tmp_path / "data" / "mlflow.db").exists()
