"""What a stage records in its MLflow run, and the traces of its phases: the stages' one way to MLflow.

Every function acts on the active run (the stage's own, opened by the tracking session): params, metrics, tags,
text, dicts, tables and files; ``nested_run`` opens a child of it; ``span`` traces a phase of the stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import mlflow


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


def experiment_id() -> str:
    return mlflow.active_run().info.experiment_id


def artifact_uri() -> str:
    return mlflow.get_artifact_uri()


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float]) -> None:
    mlflow.log_metrics({name: float(value) for name, value in metrics.items()})


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_dict(data: dict, path: str) -> None:
    mlflow.log_dict(data, path)


def log_table(rows: Any, path: str) -> None:
    """A pandas DataFrame (or a dict of columns) as an MLflow table artifact."""
    mlflow.log_table(rows, path)


def log_figure(figure: Any, path: str) -> None:
    """A matplotlib figure as an image artifact."""
    mlflow.log_figure(figure, path)


def log_artifact(local_path: str, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(local_path, artifact_path=artifact_path)


@contextlib.contextmanager
def nested_run(name: str) -> Iterator[str]:
    with mlflow.start_run(run_name=name, nested=True) as run:
        yield run.info.run_id


def span(name: str):
    """A traced phase: ``with runs.span("evaluate") as span: span.set_outputs(...)``."""
    return mlflow.start_span(name)
