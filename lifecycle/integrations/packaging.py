"""Package a model folder as an MLflow pyfunc, smoke-test it, then register it and move the alias.

Order matters for integrity: the logged model is loaded back and asked a question BEFORE anything touches the
registry, so a model that cannot answer never becomes a registered version and the alias never moves to it.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import core
import lifecycle
from core.artifacts import local_artifacts
from lifecycle import console
from lifecycle.stage import StageError

log = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
CODE_DIRS = [str(Path(package.__file__).parent) for package in (lifecycle, core)]  # the pyfunc's own code
PINNED = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "langchain-core",
    "langchain-huggingface",
    "mlflow",
    "pandas",
)


def pip_requirements() -> list[str]:
    pins = []
    for dist in PINNED:
        try:
            pinned = version(dist).split("+")[0]  # "2.13.0+cpu" -> "2.13.0": a local label is not on PyPI
        except PackageNotFoundError:
            continue
        pins.append(f"{dist}=={pinned}")
    return pins


def signature(generation: dict[str, Any]) -> ModelSignature:
    # One unnamed string column: MLflow's schema enforcement then accepts a plain string, a list, a dict and a
    # DataFrame with a ``question`` column alike (a named column rejects the first two).
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", "long", int(generation["max_new_tokens"])),
                ParamSpec("temperature", "double", float(generation["temperature"])),
                ParamSpec("top_p", "double", float(generation["top_p"])),
                ParamSpec("repetition_penalty", "double", float(generation["repetition_penalty"])),
            ]
        ),
    )


def stage_folder(source: Path, staging: Path) -> Path:
    """Copy the model folder to staging, hard-linking where possible (same disk: no second 0.5 GB)."""
    shutil.rmtree(staging, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, staging, copy_function=link_or_copy)
    return staging


def log_pyfunc(
    model_dir: Path, artifact_name: str, model_config: dict[str, Any], example: str, example_max_new_tokens: int
):
    """Log the pyfunc with the smoke request as its input example. MLflow loads the model and answers the example
    while logging (it only warns if that fails: ``smoke_check`` is the gate), so the example carries the smoke
    check's short ``max_new_tokens``, not the model's default (measured: about 2 s less per deploy)."""
    import pandas as pd

    return mlflow.pyfunc.log_model(
        name=artifact_name,
        python_model=str(MODEL_CODE),
        artifacts={"model_dir": str(model_dir)},
        code_paths=CODE_DIRS,
        model_config=model_config,
        signature=signature(model_config["generation"]),
        input_example=(pd.DataFrame({"question": [example]}), {"max_new_tokens": example_max_new_tokens}),
        pip_requirements=pip_requirements(),
    )


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def load_logged(model_uri: str):
    """The pyfunc model at ``model_uri`` (models:/, runs:/), read from a local store in place or from a remote one
    through a download that is removed once loaded."""
    with local_artifacts(model_uri) as folder:
        return mlflow.pyfunc.load_model(str(folder))


def answer_questions(model_uri: str, questions: list[str]) -> list[str]:
    """The logged model's answers to ``questions``, with its own prompt and generation settings (one batch); the
    model is let go afterwards."""
    import pandas as pd

    model = load_logged(model_uri)
    return list(model.predict(pd.DataFrame({"question": questions})))


def smoke_check(model_uri: str, question: str, max_new_tokens: int, min_chars: int) -> str:
    try:
        model = load_logged(model_uri)
        answers = model.predict({"question": question}, params={"max_new_tokens": max_new_tokens})
    except Exception as exc:
        raise StageError(f"smoke prediction through the logged pyfunc raised {type(exc).__name__}: {exc}") from exc
    answer = answers[0] if answers else ""
    if len(answer.strip()) < min_chars:
        raise StageError(
            f"smoke prediction for {question!r} returned {len(answer.strip())} chars, "
            f"fewer than deploy.smoke.min_answer_chars={min_chars}: {answer!r}"
        )
    return answer


class LeftVersion(Exception):
    """The alias could not be set, and the version it was meant for could not be removed either."""

    def __init__(self, version: str) -> None:
        super().__init__(f"version {version} was left without its alias")
        self.version = version


def register(model_uri: str, name: str, alias: str, tags: dict[str, str]) -> str:
    """A new version with ``alias`` on it, or no new version: one whose alias fails is removed again (when the store
    cannot even do that, ``LeftVersion`` names it, caused by the first failure)."""
    client = mlflow.MlflowClient()
    with console.library_output_hidden():  # "Successfully registered model ...": the summary says it
        model_version = mlflow.register_model(model_uri, name, tags=tags)
    try:
        client.set_registered_model_alias(name, alias, model_version.version)
    except Exception as failure:
        try:
            client.delete_model_version(name, model_version.version)  # no half-registered version
        except Exception:
            raise LeftVersion(model_version.version) from failure
        raise
    return model_version.version
