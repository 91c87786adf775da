"""Helpers shared by the built-in stages (no heavy imports at module level)."""

from __future__ import annotations

from omegaconf import DictConfig

from lifecycle import console
from lifecycle.stage import StageContext, StageError

SHARED_MODEL = "loaded_model"
SHARED_EVALUATION_SET = "evaluation_set"


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


def evaluation_set(context: StageContext):
    """The evaluation set this invocation answers (``lifecycle.integrations.datasets``), synced with MLflow once per
    invocation; the calling stage's run records which dataset and version it used."""
    from lifecycle.integrations import datasets, runs

    cfg = context.cfg
    if SHARED_EVALUATION_SET not in context.shared:
        if cfg.eval.dataset:
            context.shared[SHARED_EVALUATION_SET] = datasets.existing(cfg.eval.dataset)
        else:
            name = datasets.PREFIX + cfg.eval.name
            context.shared[SHARED_EVALUATION_SET] = datasets.synced(name, cfg.eval.questions, runs.experiment_id())
    datasets.record_use(context.shared[SHARED_EVALUATION_SET])
    return context.shared[SHARED_EVALUATION_SET]


def check_judge(cfg: DictConfig) -> None:
    """Preflight: a configured judge's key is in the environment and its endpoint answers."""
    from lifecycle.integrations import judges

    if judges.enabled(cfg.experiment.judge):
        judges.check(cfg.experiment.judge)


def record_judge(cfg: DictConfig) -> None:
    """The stage's run records which model judged, at which endpoint (never the key)."""
    from lifecycle.integrations import judges, runs

    if judges.enabled(cfg.experiment.judge):
        runs.log_params(judges.describe(cfg.experiment.judge))


def champion_alias(cfg: DictConfig) -> str:
    return cfg.promote.alias


def model_uri(cfg: DictConfig, alias: str) -> str:
    return f"models:/{cfg.registered_model_name}@{alias}"


def aliased_version(cfg: DictConfig, alias: str) -> str:
    """The version ``alias`` points at, or a StageError that says which mode sets it."""
    from lifecycle.integrations.packaging import alias_version

    version = alias_version(cfg.registered_model_name, alias)
    if version is None:
        run = console.command()
        todo = f"`{run} mode=deploy`"
        if alias == champion_alias(cfg):
            todo += f" and then `{run} mode=promote` (or `{run} mode=all`)"
        raise StageError(
            f"no version of registered model {cfg.registered_model_name!r} has alias {alias!r} "
            f"on {cfg.tracking_uri}. Run {todo} first (same data_dir/tracking_uri)."
        )
    return version


def score_version(cfg: DictConfig, role: str, version: str, questions):
    """A registered version's answers to the evaluation set and their scores, in a nested run named after its role
    and version and tagged with it (what mode=promote compares, and mode=monitor compares production with)."""
    from lifecycle import tags
    from lifecycle.integrations import evaluation, packaging, runs

    with runs.nested_run(f"{role}-v{version}"):
        runs.set_tags({tags.MODEL_VERSION: version})
        uri = f"models:/{cfg.registered_model_name}/{version}"
        answers = packaging.answer_questions(uri, [q.question for q in questions])
        limit = cfg.eval.thresholds.max_answer_chars
        scores = evaluation.evaluate(answers, questions, limit, cfg.experiment.judge, cfg.eval.guidelines)
    return answers, scores
