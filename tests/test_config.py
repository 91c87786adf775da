"""Config composition: every group option composes and resolves; bad overrides fail with Hydra's message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from lifecycle.config import to_container

from .conftest import CONF, ROOT

pytestmark = pytest.mark.config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in ("storage", "model", "mode", "prompt", "eval", "serve") for o in options(g)],
)
def test_every_group_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    resolved = to_container(cfg)
    assert resolved[group], f"{group}={option} composed to an empty node"
    assert "${" not in str({k: v for k, v in resolved.items() if k != "hydra"})


def test_defaults_are_the_embedded_lifecycle(compose_cfg, tmp_path):
    cfg = compose_cfg()
    assert cfg.storage.kind.value == "local"
    assert cfg.model.name == "smollm2"
    assert list(cfg.mode.stages) == ["experiment", "deploy", "test", "promote", "serve"]
    assert cfg.registered_model_name == "langchain-e2e-model"
    root = str((tmp_path / "data").resolve())
    assert cfg.tracking_uri == f"sqlite:///{root}/mlflow.db"
    assert cfg.storage.artifact_uri == f"file://{root}/mlartifacts"
    for key in ("staging", "logs", "model_cache"):
        assert cfg.paths[key].startswith(root)


def test_mode_lists_its_stages(compose_cfg):
    assert list(compose_cfg("mode=server-config").mode.stages) == ["server-config"]
    assert list(compose_cfg("mode=deploy").mode.stages) == ["deploy"]


def test_eval_sets_have_expected_facts(compose_cfg):
    cfg = compose_cfg("eval=default")
    assert len(cfg.eval.questions) >= 8
    assert all(q.expected_facts or q.expected_answer for q in cfg.eval.questions)


def test_at_least_three_prompt_templates_use_the_question(compose_cfg):
    names = options("prompt")
    assert len(names) >= 3
    for name in names:
        assert "{{question}}" in compose_cfg(f"prompt={name}").prompt.template


def test_wrong_type_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("model.generation.max_new_tokens=abc")
    assert isinstance(err.value.__cause__, ValidationError)
    assert "max_new_tokens" in str(err.value.__cause__)


def test_unknown_choice_lists_the_available_options(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="Available options") as err:
        compose_cfg("model=llama")
    assert "smollm2" in str(err.value) and "gpt2" in str(err.value)


def test_unknown_key_fails(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="max_new_token"):
        compose_cfg("model.generation.max_new_token=3")


def test_bad_enum_value_fails(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("model.dtype=float64")
    assert "float32" in str(err.value.__cause__)


def test_config_is_plain_yaml_after_resolution(compose_cfg):
    text = OmegaConf.to_yaml(OmegaConf.create(to_container(compose_cfg())))
    assert "ChatFormat" not in text and "chat_template" in text


@pytest.mark.parametrize("flag", ["--help", "--cfg=job", "--info"])
def test_cli_introspection_needs_no_heavy_imports(flag):
    code = (
        "import runpy, sys; sys.argv = ['main.py', sys.argv[1]]\n"
        "exit_code = 0\n"
        "try:\n    runpy.run_path('main.py', run_name='__main__')\n"
        "except SystemExit as exc:\n    exit_code = exc.code or 0\n"  # Hydra exits after --help and --info
        "heavy = sorted(m for m in ('mlflow', 'torch', 'transformers', 'langchain_core') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "sys.exit(exit_code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, flag], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr  # the introspection itself succeeded
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]


def test_saved_recipes_in_the_experiment_group_set_the_team_up_and_leave_the_rest_to_the_user(compose_cfg):
    server = compose_cfg("+experiment=team_server")
    assert (server.backend.kind.value, server.storage.kind.value, server.mode.name) == (
        "postgresql",
        "s3",
        "server-config",
    )
    assert server.serve.run is True
    client = compose_cfg("+experiment=team", "prompt=detailed")
    assert client.tracking_uri == "http://127.0.0.1:5050" and client.prompt.name == "qa-detailed"
    assert client.backend.kind.value == "sqlite" and client.experiment.prompt_alias == "active"  # the key is untouched


PLUGIN = """
from dataclasses import dataclass

from lifecycle.stage import Stage, StageResult


@dataclass
class NotifySettings:
    channel: str = "ml-team"
    retries: int = 2


class NotifyStage(Stage):
    name = "notify"
    uses_tracking = False

    def run(self, context):
        settings = self.cfg.notify
        return StageResult(stage=self.name, lines=[f"would notify {settings.channel} ({settings.retries} retries)"])
"""
ENTRY_POINTS = """[genai_lifecycle.stages]
notify = acme_notify:NotifyStage

[genai_lifecycle.settings]
notify = acme_notify:NotifySettings
"""


def installed_plugin(folder) -> dict[str, str]:
    """A third-party package (module and dist-info, as pip leaves them) bringing a stage and its settings; the
    environment that has it installed."""
    import os

    (folder / "acme_notify.py").write_text(PLUGIN)
    info = folder / "acme_notify-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-notify\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return {**os.environ, "PYTHONPATH": str(folder)}


def test_a_plugin_stage_brings_its_settings_typed_and_overridable_without_editing_the_config(tmp_path):
    (tmp_path / "site").mkdir()
    env = installed_plugin(tmp_path / "site")

    def main(*overrides: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "main.py", f"data_dir={tmp_path / 'data'}", *overrides]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    ran = main("mode.stages=[notify]", "notify.channel=ops-room")
    assert ran.returncode == 0 and "would notify ops-room (2 retries)" in ran.stdout, ran.stdout + ran.stderr
    wrong = main("mode.stages=[notify]", "notify.retries=many")
    assert wrong.returncode != 0 and "notify.retries" in wrong.stderr, wrong.stderr
