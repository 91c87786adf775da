"""Prompt registration against a real embedded registry: a new version only when the text changes."""

from __future__ import annotations

import mlflow
from omegaconf import OmegaConf

from lifecycle.integrations import prompts
from lifecycle.integrations.tracking import use_backend


def prompt(template: str, system: str | None = "Be brief."):
    return OmegaConf.create({"name": "qa-test", "description": "test", "system": system, "template": template})


def test_unchanged_text_reuses_the_version_and_changed_text_adds_one(tmp_path):
    use_backend(f"sqlite:///{tmp_path}/mlflow.db")
    first = prompts.register(prompt("{{question}}"))
    again = prompts.register(prompt("{{question}}"))
    changed = prompts.register(prompt("Q: {{question}}"))
    new_system = prompts.register(prompt("Q: {{question}}", system="Be thorough."))
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    assert (changed.version, changed.created) == (2, True)
    assert new_system.version == 3


def test_register_all_aliases_the_prompt_in_use(tmp_path):
    use_backend(f"sqlite:///{tmp_path}/mlflow.db")
    a, b = prompt("{{question}}"), OmegaConf.create({**prompt("A: {{question}}"), "name": "qa-other"})
    registered = prompts.register_all([a, b], in_use=b, alias="active")
    assert set(registered) == {"qa-test", "qa-other"}
    loaded = mlflow.genai.load_prompt("prompts:/qa-other@active")
    assert loaded.version == registered["qa-other"].version
    assert loaded.template[-1]["content"] == "A: {{question}}"
