"""Helpers shared by the built-in stages (no heavy imports at module level)."""

from __future__ import annotations

from omegaconf import DictConfig

from lifecycle.stage import StageContext, StageError

SHARED_MODEL = "loaded_model"


def locate(cfg: DictConfig) -> None:
    """Preflight: the model is available (or convertible) without loading anything heavy."""
    from lifecycle.integrations.models import locate_model

    locate_model(cfg.model, cfg.paths.model_cache)


def loaded_model(context: StageContext):
    """The model and tokenizer, loaded once per invocation and shared by the stages that need them."""
    from lifecycle.integrations.models import load_for_config

    if SHARED_MODEL not in context.shared:
        context.shared[SHARED_MODEL] = load_for_config(context.cfg.model, context.cfg.paths.model_cache)
    return context.shared[SHARED_MODEL]


def model_uri(cfg: DictConfig) -> str:
    return f"models:/{cfg.registered_model_name}@{cfg.deploy.alias}"


def aliased_version(cfg: DictConfig) -> str:
    """The version the deploy alias points at, or a StageError that says to deploy first."""
    from lifecycle.integrations.packaging import alias_version

    version = alias_version(cfg.registered_model_name, cfg.deploy.alias)
    if version is None:
        raise StageError(
            f"no version of registered model {cfg.registered_model_name!r} has alias {cfg.deploy.alias!r} "
            f"on {cfg.tracking_uri}. Run `python main.py mode=deploy` first (same data_dir/tracking_uri)."
        )
    return version
