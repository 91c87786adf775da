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
