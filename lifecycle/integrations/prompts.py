"""Prompt templates in MLflow's prompt registry.

A template is registered as a new version only when its text (or system message) changed since the latest version;
the alias ``experiment.prompt_alias`` is moved to the version the run uses. If the registry is unavailable (for
example a tracking server without it), the templates are logged as run artifacts under ``prompts/`` instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from omegaconf import DictConfig

from core.generation import check_template
from lifecycle import tags

log = logging.getLogger(__name__)

FALLBACK_DIR = "prompts"


@dataclass(frozen=True)
class RegisteredPrompt:
    name: str
    version: int | None  # None when only the artifact fallback was written
    created: bool
    uri: str


def _messages(prompt_cfg: DictConfig) -> list[dict[str, str]] | str:
    if prompt_cfg.system:
        return [{"role": "system", "content": prompt_cfg.system}, {"role": "user", "content": prompt_cfg.template}]
    return prompt_cfg.template


def _latest(name: str):
    try:
        return mlflow.genai.load_prompt(f"prompts:/{name}@latest")
    except Exception:
        return None


def version_of(prompt_cfg: DictConfig) -> int | None:
    """The registered version that holds exactly this template (the latest, when its text is this one), if any: what
    a deployed model records as its prompt version."""
    latest = _latest(prompt_cfg.name)
    return latest.version if latest is not None and latest.template == _messages(prompt_cfg) else None


def register(prompt_cfg: DictConfig) -> RegisteredPrompt:
    template = _messages(prompt_cfg)
    latest = _latest(prompt_cfg.name)
    if latest is not None and latest.template == template:
        return RegisteredPrompt(prompt_cfg.name, latest.version, False, f"prompts:/{prompt_cfg.name}/{latest.version}")
    version = mlflow.genai.register_prompt(
        name=prompt_cfg.name,
        template=template,
        commit_message=prompt_cfg.description,
        tags={tags.DESCRIPTION: prompt_cfg.description},
    )
    log.info("registered prompt %s version %s", prompt_cfg.name, version.version)
    return RegisteredPrompt(prompt_cfg.name, version.version, True, f"prompts:/{prompt_cfg.name}/{version.version}")


def fallback(prompt_cfg: DictConfig) -> RegisteredPrompt:
    path = f"{FALLBACK_DIR}/{prompt_cfg.name}.json"
    mlflow.log_dict({"name": prompt_cfg.name, "template": _messages(prompt_cfg)}, path)
    return RegisteredPrompt(prompt_cfg.name, None, True, f"runs:/{mlflow.active_run().info.run_id}/{path}")


def usable(prompts: list[DictConfig]) -> list[DictConfig]:
    """The templates that can be used; a broken one is left out with a warning (it would fail the run that uses
    it, not the others)."""
    kept = []
    for prompt_cfg in prompts:
        try:
            check_template(prompt_cfg.template)
        except ValueError as exc:
            log.warning("not registering prompt %s: %s", prompt_cfg.name, exc)
            continue
        kept.append(prompt_cfg)
    return kept


def register_all(prompts: list[DictConfig], in_use: DictConfig, alias: str) -> dict[str, RegisteredPrompt]:
    """Register every usable template; alias the one in use. Returns name -> what was registered."""
    registered = {}
    try:
        for prompt_cfg in usable(prompts):
            registered[prompt_cfg.name] = register(prompt_cfg)
        used = registered.get(in_use.name) or register(in_use)
        registered[in_use.name] = used
        mlflow.genai.set_prompt_alias(in_use.name, alias=alias, version=used.version)
    except Exception as exc:
        log.warning("prompt registry unavailable (%s); logging templates as run artifacts instead", exc)
        registered = {p.name: fallback(p) for p in {p.name: p for p in [*prompts, in_use]}.values()}
    return registered
