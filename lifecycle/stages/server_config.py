"""server-config: how to run an MLflow tracking server for the chosen storage, and what a client needs; with
``serve.run=true``, also start that server (in the foreground, until Ctrl-C).

Lean by default: one worker and no job runner (0.56 GB instead of 3.6 GB). The server proxies artifacts
(``--artifacts-destination``), so clients need no S3 credentials; with storage=s3 the server needs them, from its
environment. Needs no MLflow run and imports nothing heavy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lifecycle import console, processes
from lifecycle.stage import Stage, StageContext, StageResult
from lifecycle.stores import as_prefix, s3_environment

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: it alone costs ~3 GB


def server_args(cfg) -> list[str]:
    return [
        "mlflow",
        "server",
        "--backend-store-uri",
        cfg.backend.uri,  # no password in it: PostgreSQL's comes from the server's PGPASSWORD
        "--artifacts-destination",
        cfg.storage.artifact_uri,
        "--host",
        cfg.serve.host,
        "--port",
        str(cfg.serve.tracking_port),
        "--workers",
        "1",
    ]


def server_environment(cfg) -> dict[str, str]:
    """The tracking server's environment: this one's, no job runner, and what it needs to reach S3."""
    return {"AWS_DEFAULT_REGION": cfg.storage.region, **os.environ, **SERVER_ENV, **s3_environment(cfg)}


def runnable_args(cfg) -> list[str]:
    """``server_args`` with this environment's mlflow, whatever PATH says."""
    return [str(Path(sys.executable).with_name("mlflow")), *server_args(cfg)[1:]]


def server_command(cfg) -> str:
    return f"{as_prefix(SERVER_ENV)} {' '.join(server_args(cfg))}"


def server_environment_lines(cfg) -> list[str]:
    lines = []
    if cfg.backend.kind.value == "postgresql":
        lines += [
            "the server reaches the database with (clients do not):",
            "  export PGPASSWORD=<the database user's password>",
        ]
    if cfg.storage.kind.value == "s3":
        lines += [
            "the server reaches the bucket with (clients do not: it proxies artifacts):",
            *(f"  export {k}={v}" for k, v in s3_environment(cfg).items()),
            "  export AWS_ACCESS_KEY_ID=<your access key>",
            "  export AWS_SECRET_ACCESS_KEY=<your secret key>",
        ]
    return lines


class ServerConfigStage(Stage):
    name = "server-config"
    uses_tracking = False

    def run(self, context: StageContext) -> StageResult:
        cfg = self.cfg
        url = f"http://{cfg.serve.host}:{cfg.serve.tracking_port}"
        lines = [
            f"backend={cfg.backend.kind.value} storage={cfg.storage.kind.value}: records in {cfg.backend.uri}, "
            f"artifacts in {cfg.storage.artifact_uri}",
            *server_environment_lines(cfg),
            f"start the tracking server (or: {console.command()} mode=server-config backend={cfg.backend.kind.value} "
            f"storage={cfg.storage.kind.value} serve.run=true):",
            f"  {server_command(cfg)}",
            "then point clients at it:",
            f"  export MLFLOW_TRACKING_URI={url}",
            f"  {console.command()} tracking_uri={url} storage={cfg.storage.kind.value}",
        ]
        if cfg.serve.run:
            print("\n".join(lines), flush=True)
            lines.append(f"tracking server on {url} stopped")
            self._run_server()
        return StageResult(stage=self.name, outputs={"server_command": server_command(cfg)}, lines=lines)

    def _run_server(self) -> None:
        cfg = self.cfg
        if cfg.backend.kind.value == "postgresql":
            from lifecycle.integrations import database

            database.check(cfg.backend.uri)  # what is wrong, in words, instead of the server's traceback
        if cfg.storage.kind.value == "s3":
            from lifecycle.integrations import storage

            storage.check(cfg.storage)  # the server would only fail at the first upload
        Path(cfg.paths.root).mkdir(parents=True, exist_ok=True)
        print(f"tracking server on http://{cfg.serve.host}:{cfg.serve.tracking_port}; Ctrl-C stops it", flush=True)
        with processes.unwinding_on_sigterm():  # a SIGTERM to this process alone stops the server too, as Ctrl-C
            server = subprocess.Popen(runnable_args(cfg), env=server_environment(cfg))
            try:
                server.wait()
            except processes.OPERATOR_STOP:
                server.terminate()
                server.wait(timeout=30)
