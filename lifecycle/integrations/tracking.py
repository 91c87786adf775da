"""MLflow tracking for one invocation: backend set-up, the parent run, one nested run per stage, traces.

Embedded (the default): a SQLite backend (``tracking_uri``) and ``storage.artifact_uri`` (a local folder, or
``s3://bucket/prefix/mlartifacts`` written by this client) as the experiment's artifact location.
Through a tracking server (``tracking_uri=http://...``): the server decides where artifacts go and proxies them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from lifecycle import console, tags
from lifecycle.config import to_container
from lifecycle.redact import redact
from lifecycle.stage import StageError, StageResult
from lifecycle.stores import direct_s3, is_server, scheme

log = logging.getLogger(__name__)

CONFIG_ARTIFACT = "config/resolved.yaml"
SERVER_PROBE_TIMEOUT_S = 3
LOGGED_PARAMS = {
    "mode": "mode.name",
    "model": "model.name",
    "prompt": "prompt.name",
    "eval": "eval.name",
    "storage": "storage.kind",
    "max_new_tokens": "model.generation.max_new_tokens",
    "temperature": "model.generation.temperature",
}


def ensure_local_dirs(cfg: DictConfig) -> None:
    keys = ["root", "staging", "logs", "model_cache"] + (["artifacts"] if cfg.storage.kind.value == "local" else [])
    for key in keys:
        Path(cfg.paths[key]).mkdir(parents=True, exist_ok=True)


def check_tracking_server(tracking_uri: str) -> None:
    """A tracking server answers within seconds, or StageError with the command that starts one."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=SERVER_PROBE_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
    raise StageError(
        f"the tracking server {tracking_uri} does not answer ({reason}). Start it with "
        f"`{console.command()} mode=server-config serve.run=true` (add the same storage=... as here), or fix "
        "tracking_uri."
    )


def check_stores(cfg: DictConfig) -> None:
    """Before any run: a tracking server answers; without one, a PostgreSQL backend answers and accepts us, and
    storage=s3 checks the store itself (the client talks to it directly) and exports what MLflow's S3 client reads."""
    if is_server(cfg.tracking_uri):
        check_tracking_server(cfg.tracking_uri)  # it proxies the artifacts: this client needs no S3 credentials
        return
    if cfg.tracking_uri.startswith("postgresql"):
        from lifecycle.integrations import database

        database.check(cfg.tracking_uri)
    if direct_s3(cfg):
        from lifecycle.integrations import storage

        storage.check(cfg.storage)
        storage.use_for_mlflow(cfg.storage)


# Through a tracking server MLflow retries a failed request 7 times with doubling waits: a server whose database is down
# keeps a deploy waiting for minutes. Three retries, 1 s apart at first, give a clear error in about ten seconds;
# the variables still win where they are set (all three).
# Traces go to a tracking server synchronously: MLflow 3.17's background trace exporter can deadlock a run against
# mlflow.genai.evaluate. Its HTTP calls import modules lazily (Databricks and Spark probes) under MLflow's import-hook
# lock while evaluate, holding that lock, imports a flavour: seen here as an experiment hung for good between two
# threads' import locks. In-process export costs a few milliseconds per trace on a local server.
SERVER_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
}


FAILED_ON_SERVER = re.compile(r"error code 5\d\d|too many 5\d\d error responses|INTERNAL_ERROR|TEMPORARILY_UNAVAILABLE")


def use_backend(tracking_uri: str) -> None:
    if is_server(tracking_uri):
        for name, value in SERVER_SETTINGS.items():
            os.environ.setdefault(name, value)
    # No notebook display of traces: deciding whether to show them makes MLflow's trace-export thread try
    # `import IPython` on every export, while mlflow.genai.evaluate registers import hooks under a lock of its own
    # on the main thread. The two locks taken in opposite orders deadlocked an experiment run (py-spy: the exporter
    # in _find_spec waiting for MLflow's import-hook lock, the main thread holding it and waiting for the import
    # lock). This is a command-line program: there is no notebook to display anything in.
    mlflow.tracing.disable_notebook_display()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def explain(exc: Exception, tracking_uri: str) -> str:
    """A failed tracking call in words: a server that answered 5xx (its database or artifact store failing) or did
    not answer; otherwise the exception itself."""
    text = str(exc)
    if is_server(tracking_uri) and FAILED_ON_SERVER.search(text):
        return (
            f"the tracking server at {tracking_uri} failed the request (HTTP 5xx): its database or artifact store is "
            "not answering; its log says which"
        )
    if is_server(tracking_uri) and ("Max retries exceeded" in text or "Connection refused" in text):
        return f"the tracking server at {tracking_uri} does not answer: start it, or fix tracking_uri"
    return f"{type(exc).__name__}: {text}"


def ensure_experiment(name: str, artifact_uri: str | None) -> str:
    """The experiment's id, created with ``artifact_uri`` as its artifact location (None: the server decides).

    An existing experiment keeps its location (MLflow cannot move it). A location in another kind of store than the
    one configured (local files vs S3) is an error: the run would silently write where the user did not ask."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, artifact_location=artifact_uri)
    if artifact_uri and scheme(experiment.artifact_location) != scheme(artifact_uri):
        raise StageError(
            f"experiment {name!r} keeps its artifacts at {experiment.artifact_location}, but this run is configured "
            f"for {artifact_uri}. MLflow cannot move an experiment's artifacts: use another experiment_name "
            f"(e.g. experiment_name={name}-{scheme(artifact_uri)}) or another data_dir."
        )
    if artifact_uri and experiment.artifact_location.rstrip("/") != artifact_uri.rstrip("/"):
        log.warning(
            "experiment %r keeps its artifact location %s (config says %s); use another experiment_name to change it",
            name,
            experiment.artifact_location,
            artifact_uri,
        )
    return experiment.experiment_id


@dataclass
class StageRun:
    run_id: str | None
    failed: bool = False

    def finish(self, result: StageResult) -> None:
        self.failed = result.error is not None
        if self.run_id is None:
            return
        client = mlflow.MlflowClient()
        if result.metrics:
            mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()}, run_id=self.run_id)
        client.set_tag(self.run_id, tags.STATUS, result.status)
        if result.error:
            client.set_tag(self.run_id, tags.ERROR, redact(result.error)[:5000])


class TrackingSession:
    """The runs of one invocation: a parent run, with one nested run per stage. (A job of a sweep gets
    ``lifecycle.integrations.sweep_runs.SweepJobSession`` instead; ``lifecycle.sessions`` picks.)"""

    raises_on_failure = True  # a failed invocation exits 1 (a sweep job returns 1 instead, so its sweep goes on)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.tracking_uri = cfg.tracking_uri
        # Through a tracking server, artifacts go where its --artifacts-destination says (proxied); embedded, to
        # storage.artifact_uri.
        artifact_uri = None if is_server(cfg.tracking_uri) else cfg.storage.artifact_uri
        self.experiment_id = ensure_experiment(cfg.experiment_name, artifact_uri)
        if os.environ.get("MLFLOW_EXPERIMENT_ID") != self.experiment_id:  # where MLflow keeps the active one
            mlflow.set_experiment(experiment_id=self.experiment_id)  # resets the tracer provider: ~0.8 s

    @classmethod
    def open(cls, cfg: DictConfig) -> TrackingSession:
        check_stores(cfg)
        ensure_local_dirs(cfg)
        use_backend(cfg.tracking_uri)
        return cls(cfg)

    def describe(self) -> None:
        """The invocation's params and its resolved config (secrets redacted), on the active run."""
        resolved = redact(to_container(self.cfg))
        mlflow.log_params({k: _select(resolved, path) for k, path in LOGGED_PARAMS.items()})
        mlflow.log_text(yaml.safe_dump(resolved, sort_keys=False), CONFIG_ARTIFACT)

    @contextlib.contextmanager
    def parent_run(self) -> Iterator[str]:
        cfg = self.cfg
        run = mlflow.start_run(
            run_name=f"lifecycle-{cfg.mode.name}", tags={tags.MODE: cfg.mode.name, tags.STATUS: "running"}
        )
        self._parent_failed = True  # until finish says otherwise (an exception skips it)
        try:
            self.describe()
            yield run.info.run_id
        finally:
            flush_traces()  # traces are exported asynchronously: have them stored before the run is reported
            mlflow.end_run(status=_status(self._parent_failed))

    def start_stage_run(self, name: str):
        return mlflow.start_run(run_name=name, nested=True, tags={tags.STAGE: name})

    @contextlib.contextmanager
    def stage_run(self, name: str, enabled: bool = True) -> Iterator[StageRun]:
        if not enabled:
            yield StageRun(None)
            return
        run = self.start_stage_run(name)
        stage_run = StageRun(run.info.run_id)
        try:
            yield stage_run
        finally:
            while (active := mlflow.active_run()) and active.info.run_id != run.info.run_id:
                mlflow.end_run(status=_status(True))  # a run the stage left open
            mlflow.end_run(status=_status(stage_run.failed))

    def explain(self, exc: Exception) -> str:
        return explain(exc, self.tracking_uri)

    def finish(self, report: Any, seconds: float) -> None:
        """The invocation's outcome on its parent run (called inside ``parent_run``)."""
        self._parent_failed = report.failed
        mlflow.set_tag(tags.STATUS, "failed" if report.failed else "success")
        if report.failed:
            mlflow.set_tag(tags.ERROR, redact(report.error)[:5000])


def _status(failed: bool) -> str:
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)


def _select(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def flush_traces() -> None:
    mlflow.flush_trace_async_logging()
