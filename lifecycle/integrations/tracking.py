"""MLflow tracking for one invocation: backend set-up, the parent run, one nested run per stage, traces.

Embedded (the default): a SQLite backend (``tracking_uri``) and ``storage.artifact_uri`` (a local folder, or
``s3://bucket/prefix/mlartifacts`` written by this client) as the experiment's artifact location.
Through a tracking server (``tracking_uri=http://...``): the server decides where artifacts go and proxies them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from lifecycle.config import to_container
from lifecycle.locations import direct_s3, is_server, scheme
from lifecycle.redact import redact
from lifecycle.stage import StageError, StageResult

if TYPE_CHECKING:
    from lifecycle.sweep import SweepJob

log = logging.getLogger(__name__)

TAG_MODE = "lifecycle.mode"
TAG_STAGE = "lifecycle.stage"
TAG_STATUS = "lifecycle.status"
TAG_ERROR = "lifecycle.error"
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


def quiet() -> None:
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
        "`python main.py mode=server-config serve.run=true` (add the same storage=... as here), or fix tracking_uri."
    )


def check_storage(cfg: DictConfig) -> None:
    """Before any run: a tracking server answers; storage=s3 without one checks the store itself (the client
    talks to it directly), and exports what MLflow's S3 client reads."""
    if is_server(cfg.tracking_uri):
        check_tracking_server(cfg.tracking_uri)  # it proxies the artifacts: this client needs no S3 credentials
    elif direct_s3(cfg):
        from lifecycle.integrations import storage

        storage.check(cfg.storage)
        storage.use_for_mlflow(cfg.storage)


def use_backend(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


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
        client.set_tag(self.run_id, TAG_STATUS, result.status)
        if result.error:
            client.set_tag(self.run_id, TAG_ERROR, redact(result.error)[:5000])


class TrackingSession:
    """The runs of one invocation. Standalone: a parent run with one nested run per stage. As a job of a sweep
    (``sweep`` given): each stage run is a direct child of the sweep's run, described like a parent would be and
    tagged with the sweep, the job and its overrides, so the sweep's children are the jobs themselves."""

    def __init__(self, cfg: DictConfig, sweep: SweepJob | None = None) -> None:
        self.cfg = cfg
        self.sweep = sweep
        self.tracking_uri = cfg.tracking_uri
        # Through a tracking server, artifacts go where its --artifacts-destination says (proxied); embedded, to
        # storage.artifact_uri.
        artifact_uri = None if is_server(cfg.tracking_uri) else cfg.storage.artifact_uri
        self.experiment_id = ensure_experiment(cfg.experiment_name, artifact_uri)
        if os.environ.get("MLFLOW_EXPERIMENT_ID") != self.experiment_id:  # where MLflow keeps the active one
            mlflow.set_experiment(experiment_id=self.experiment_id)  # resets the tracer provider: ~0.8 s

    def _describe(self) -> None:
        """The invocation's params and its resolved config (secrets redacted), on the active run."""
        resolved = redact(to_container(self.cfg))
        mlflow.log_params({k: _select(resolved, path) for k, path in LOGGED_PARAMS.items()})
        mlflow.log_text(yaml.safe_dump(resolved, sort_keys=False), CONFIG_ARTIFACT)

    @contextlib.contextmanager
    def parent_run(self, cfg: DictConfig) -> Iterator[str]:
        if self.sweep:  # the sweep opened its run and closes it: the jobs only hang their runs below it
            try:
                yield self.sweep.run_id
            finally:
                if not self.sweep.in_sweep_process:
                    flush_traces()  # a worker process: its traces must be out before it goes (~1 s)
            return  # in the sweep's own process the sweep's end flushes every job's traces at once
        tags = {TAG_MODE: cfg.mode.name, TAG_STATUS: "running"}
        run = mlflow.start_run(run_name=f"lifecycle-{cfg.mode.name}", tags=tags)
        self._parent_failed = True  # until finish_parent says otherwise (an exception skips it)
        try:
            self._describe()
            yield run.info.run_id
        finally:
            flush_traces()  # traces are exported asynchronously: have them stored before the run is reported
            mlflow.end_run(status=_status(self._parent_failed))

    @contextlib.contextmanager
    def stage_run(self, name: str, enabled: bool = True) -> Iterator[StageRun]:
        if not enabled:
            yield StageRun(None)
            return
        if self.sweep:
            tags = {TAG_STAGE: name, "mlflow.parentRunId": self.sweep.run_id, **self.sweep.tags()}
            run = mlflow.start_run(run_name=f"{name}-job{self.sweep.num}", tags=tags)
            self._describe()
        else:
            run = mlflow.start_run(run_name=name, nested=True, tags={TAG_STAGE: name})
        stage_run = StageRun(run.info.run_id)
        try:
            yield stage_run
        finally:
            while (active := mlflow.active_run()) and active.info.run_id != run.info.run_id:
                mlflow.end_run(status=_status(True))  # a run the stage left open
            mlflow.end_run(status=_status(stage_run.failed))

    def finish_parent(self, report: Any) -> None:
        if self.sweep:
            return  # the sweep's end marks its run
        self._parent_failed = report.failed
        mlflow.set_tag(TAG_STATUS, "failed" if report.failed else "success")
        if report.failed:
            mlflow.set_tag(TAG_ERROR, redact(report.error)[:5000])

    def record_job_time(self, report: Any, seconds: float) -> None:
        """A sweep job's wall time (imports and model load included) on each of its runs."""
        for result in report.results:
            if result.run_id:
                mlflow.MlflowClient().log_metric(result.run_id, "job_s", seconds)


def _status(failed: bool) -> str:
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)


def _select(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def open_session(cfg: DictConfig, sweep: SweepJob | None = None) -> TrackingSession:
    quiet()
    if sweep is None:
        check_storage(cfg)  # a sweep checked the store once, before its first job
    ensure_local_dirs(cfg)
    use_backend(cfg.tracking_uri)
    return TrackingSession(cfg, sweep)


def flush_traces() -> None:
    mlflow.flush_trace_async_logging()
