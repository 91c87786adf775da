from __future__ import annotations

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from .conftest import fails_printing

scenarios("config.feature")


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {}


@given("an empty Hugging Face cache")
def empty_hf_cache(tmp_path, extra_env):
    extra_env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0")


@when(parsers.parse('I run "{command}"'), target_fixture="invocation")
def run_with_env(workspace, command, extra_env):
    return workspace.run(command, env=extra_env)


@then(parsers.parse("within {seconds:d} seconds it fails, printing these lines"))
def fails_fast(invocation, workspace, seconds, docstring):
    """The model check runs before MLflow or torch are imported; the bound includes interpreter start-up."""
    fails_printing(invocation, workspace, docstring)
    assert invocation.elapsed_s < seconds, invocation.explain()


@then(parsers.parse('no folder named "{name}" was created where it ran'))
def nothing_written(workspace, name):
    from .conftest import ROOT

    assert not (ROOT / name).exists()
    assert not workspace.data_dir.exists()  # nor the data directory the scenario gave it
