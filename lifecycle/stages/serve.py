"""serve: print (and log) the commands that serve the registered model over HTTP; with ``serve.run=true``, also
start this project's server for it, in this process, until it is stopped (Ctrl-C).

With ``serve.traces`` (the default), that server records a trace of every answer in this run's experiment: through
the tracking server when ``tracking_uri`` is one, else through the lean tracking server (``mode=server-config``'s)
started on the same backend beside it, on ``serve.tracking_port``, and stopped with it.

Two servers for the same ``models:/<name>@champion`` URI (``promote.alias``: what mode=promote let through):
MLflow's own scoring server (``mlflow models serve``) and this project's FastAPI server (``python -m serving``).
"""

from __future__ import annotations

import os
from pathlib import Path

from lifecycle import processes
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import aliased_version, champion_alias, model_uri
from lifecycle.stores import as_prefix, client_environment, direct_s3, is_server

TRACKER_READY_S = 120  # the lean tracking server is ready in about 7 s on two cores


def engine_flags(serve) -> str:
    """``--dtype``/``--device`` for this project's server, where the config asks for other than its defaults."""
    flags = f" --dtype {serve.dtype.value}" if serve.dtype is not None else ""
    return flags + (f" --device {serve.device.value}" if serve.device.value != "auto" else "")


def serving_commands(cfg, uri: str) -> list[str]:
    env = as_prefix(client_environment(cfg))
    host, serve = cfg.serve.host, cfg.serve
    return [
        f"{env} mlflow models serve -m {uri} --env-manager local --host {host} --port {serve.mlflow_port}",
        f"{env} python -m serving --model-uri {uri} --host {host} --port {serve.port}{engine_flags(serve)}",
    ]


class ServeStage(Stage):
    name = "serve"

    def preflight(self) -> None:
        """serve.backend=ray: the cluster is named and its replicas can share the tracking store, before any run."""
        if self.cfg.serve.backend.value != "ray":
            return
        from serving.replicas import environment

        if not self._ray_address():
            raise StageError(
                "serve.backend=ray deploys onto a running Ray cluster: start one (ray start --head --port 6379) and "
                "give serve.ray.address=<its host>:6379, or set RAY_ADDRESS"
            )
        try:
            environment(self.cfg.tracking_uri)
        except ValueError as exc:
            raise StageError(f"serve.backend=ray: {exc}") from None

    def run(self, context: StageContext) -> StageResult:
        from lifecycle.integrations import runs

        version = aliased_version(self.cfg, champion_alias(self.cfg))
        s3 = direct_s3(self.cfg)
        uri = model_uri(self.cfg, champion_alias(self.cfg))
        commands = serving_commands(self.cfg, uri)
        runs.log_text("\n".join(commands) + "\n", "serving/commands.sh")
        if self.cfg.serve.backend.value == "ray":
            return self._deploy_replicas(uri, version)
        if self.cfg.serve.run:
            self._run_server(uri)
        return StageResult(
            stage=self.name,
            outputs={"serving_commands": commands, "served_version": version},
            lines=[
                f"serve {uri} (version {version}) with either (inside this project's virtual environment):",
                *commands,
                *(["(with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY exported: the model is in S3)"] if s3 else []),
            ],
        )

    def _ray_address(self) -> str | None:
        return self.cfg.serve.ray.address or os.environ.get("RAY_ADDRESS")

    def _settings(self, uri: str, **extra):
        """The server's settings for ``uri``: the environment's SERVING_* and this config's choices."""
        from serving.http.settings import Settings

        serve = self.cfg.serve
        dtype = serve.dtype.value if serve.dtype is not None else None
        return Settings.from_env(
            model_uri=uri, host=serve.host, port=serve.port, dtype=dtype, device=serve.device.value, **extra
        )

    def _deploy_replicas(self, uri: str, version) -> StageResult:
        """serve.backend=ray: the server as a Ray Serve application on the running cluster (serving.replicas); with
        serve.traces, every replica traces its answers into this run's experiment through the tracking server."""
        from lifecycle.integrations import runs
        from serving.replicas import deploy

        fleet = fleet_of(self.cfg.serve, self._ray_address())
        traced = {"traces_url": self.cfg.tracking_uri, "traces_experiment_id": runs.experiment_id()}
        settings = self._settings(uri, **(traced if self.cfg.serve.traces else {}))
        try:
            url = deploy(settings, fleet, self.cfg.tracking_uri)
        except (ValueError, RuntimeError) as exc:
            raise StageError(f"serve.backend=ray: {exc}") from None
        size = (
            f"{fleet.min_replicas} to {fleet.max_replicas} replicas"
            if fleet.max_replicas is not None
            else f"{fleet.replicas} replica{'s' if fleet.replicas != 1 else ''}"
        )
        return StageResult(
            stage=self.name,
            outputs={"served_version": version, "url": url, "application": fleet.app_name},
            lines=[
                f"serving {uri} (version {version}) on the Ray cluster at {fleet.address}: application "
                f"{fleet.app_name}, {size}, at {url} (docs at /docs)",
                *(
                    [f"every answer is traced into experiment {traced['traces_experiment_id']}"]
                    if self.cfg.serve.traces
                    else []
                ),
                f"deploy again under serve.ray.app_name={fleet.app_name} to roll out a new version; "
                f"python -m serving --backend ray --ray-address {fleet.address} --app-name {fleet.app_name} "
                "--undeploy deletes it",
            ],
        )

    def _run_server(self, uri: str) -> None:
        from lifecycle.integrations import runs
        from serving.__main__ import serve as run_server

        serve = self.cfg.serve
        with processes.unwinding_on_sigterm():  # SIGTERM (an orchestrator's stop) stops the tracker too, as Ctrl-C
            tracker, traces_url = self._trace_destination() if serve.traces else (None, None)
            experiment = runs.experiment_id() if traces_url else None
            if traces_url:
                print(f"every answer is traced into experiment {experiment} through {traces_url}", flush=True)
            print(f"serving {uri} on http://{serve.host}:{serve.port} (docs at /docs); Ctrl-C stops it", flush=True)
            try:
                error = run_server(self._settings(uri, traces_url=traces_url, traces_experiment_id=experiment))
            except processes.OPERATOR_STOP:  # stopped by its operator once drained: the usual end
                error = None
            finally:
                if tracker is not None:
                    processes.stop(tracker)
        if error:
            raise StageError(f"the server for {uri} stopped: the model did not load: {error}")

    def _trace_destination(self):
        """(the tracking server process started here, or None; the URL traces go to)."""
        from lifecycle.stages.server_config import runnable_args, server_environment

        cfg = self.cfg
        if is_server(cfg.tracking_uri):
            return None, cfg.tracking_uri
        url = f"http://{cfg.serve.host}:{cfg.serve.tracking_port}"
        log = Path(cfg.paths.logs) / "tracking-server.log"
        try:
            proc = processes.start(runnable_args(cfg), server_environment(cfg), f"{url}/health", log, TRACKER_READY_S)
        except processes.NotReady as exc:
            raise StageError(
                f"the tracking server for the traces did not start on {url}: {exc}. Free the port "
                "(serve.tracking_port=...) or serve without traces (serve.traces=false)"
            ) from None
        return proc, url


def fleet_of(serve, address: str):
    """``serve.replicas`` (or ``serve.autoscaling``) and ``serve.ray`` as serving.replicas.Fleet."""
    from serving.replicas import Fleet

    scaling = serve.autoscaling
    bounds = (
        {"min_replicas": scaling.min, "max_replicas": scaling.max, "target_ongoing": scaling.target_ongoing}
        if scaling is not None
        else {}
    )
    return Fleet(address, serve.ray.app_name, serve.replicas, cpus_per_replica=serve.ray.cpus_per_replica, **bounds)
