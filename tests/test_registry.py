"""The stage registry: built-ins and third-party plugins through one entry-point group, resolved lazily."""

from __future__ import annotations

import sys
import textwrap

import pytest

from lifecycle.registry import ENTRY_POINT_GROUP, StageRegistry, UnknownStageError
from lifecycle.stage import Stage


def test_builtin_stages_are_entry_points():
    registry = StageRegistry.discover()
    assert {"experiment", "deploy", "test", "promote", "serve", "server-config"} <= set(registry.names())
    assert registry.get("server-config").__name__ == "ServerConfigStage"
    assert registry.get("test").__name__ == "ModelTestStage"


def test_resolving_a_name_imports_only_that_stage():
    sys.modules.pop("lifecycle.stages.deploy", None)
    StageRegistry.discover().get("server-config")
    assert "lifecycle.stages.deploy" not in sys.modules


def test_unknown_stage_lists_the_available_ones():
    with pytest.raises(UnknownStageError) as err:
        StageRegistry.discover().get("deplyo")
    message = str(err.value)
    assert "unknown stage 'deplyo'" in message
    assert "experiment" in message and "server-config" in message
    assert "Did you mean 'deploy'?" in message


def test_a_third_party_plugin_is_resolved_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_stages.py").write_text(
        textwrap.dedent(
            """
            from lifecycle.stage import Stage, StageResult

            class NotifyStage(Stage):
                name = "notify"
                uses_tracking = False

                def run(self, context):
                    return StageResult(stage=self.name, lines=["notified"])
            """
        )
    )
    dist = tmp_path / "acme_stages-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-stages\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnotify = acme_stages:NotifyStage\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = StageRegistry.discover()
    assert "notify" in registry.names()
    stage_cls = registry.get("notify")
    assert issubclass(stage_cls, Stage)
    assert stage_cls(cfg=None).run(None).lines == ["notified"]


def test_an_entry_point_that_is_not_a_stage_is_refused(tmp_path, monkeypatch):
    (tmp_path / "not_a_stage.py").write_text("class Thing:\n    pass\n")
    dist = tmp_path / "not_a_stage-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: not-a-stage\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nthing = not_a_stage:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match=r"not a lifecycle\.stage\.Stage subclass"):
        StageRegistry.discover().get("thing")
