"""server-config: how to run an MLflow tracking server for the chosen storage, and what a client needs.

Lean by default (one worker, no job runner). Needs no MLflow run and imports nothing heavy.
"""

from __future__ import annotations

from lifecycle.stage import Stage, StageContext, StageResult


def server_command(cfg) -> str:
    backend = f"sqlite:///{cfg.paths.backend_db}"
    return (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server "
        f"--backend-store-uri {backend} --artifacts-destination {cfg.storage.artifact_uri} "
        f"--host {cfg.serve.host} --port {cfg.serve.tracking_port} --workers 1"
    )


def client_environment(cfg) -> list[str]:
    lines = [f"export MLFLOW_TRACKING_URI=http://{cfg.serve.host}:{cfg.serve.tracking_port}"]
    if cfg.storage.kind.value == "s3":
        lines += [
            "# the server needs these to reach the bucket (clients do not: it proxies artifacts):",
            f"export MLFLOW_S3_ENDPOINT_URL={cfg.storage.endpoint_url}",
            "export AWS_ACCESS_KEY_ID=<your access key>",
            "export AWS_SECRET_ACCESS_KEY=<your secret key>",
        ]
    return lines


class ServerConfigStage(Stage):
    name = "server-config"
    uses_tracking = False

    def run(self, context: StageContext) -> StageResult:
        cfg = self.cfg
        lines = [
            f"storage={cfg.storage.kind.value}: backend {cfg.paths.backend_db}, artifacts {cfg.storage.artifact_uri}",
            "start the tracking server:",
            f"  {server_command(cfg)}",
            "then point clients at it:",
            *(f"  {line}" for line in client_environment(cfg)),
            f"  python main.py tracking_uri=http://{cfg.serve.host}:{cfg.serve.tracking_port}",
        ]
        return StageResult(stage=self.name, outputs={"server_command": server_command(cfg)}, lines=lines)
