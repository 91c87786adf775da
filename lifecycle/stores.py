"""Where a run's records and artifacts live, and what a process needs in its environment to reach them (pure)."""

from __future__ import annotations

from typing import Any

from core.artifacts import scheme

__all__ = ["as_prefix", "client_environment", "direct_s3", "is_server", "s3_environment", "scheme"]


def is_server(tracking_uri: str) -> bool:
    """A tracking server (which proxies artifacts), as opposed to an embedded backend such as sqlite:///..."""
    return tracking_uri.startswith(("http://", "https://", "databricks"))


def direct_s3(cfg: Any) -> bool:
    """This process writes artifacts to S3 itself (storage=s3 without a tracking server)."""
    return cfg.storage.kind.value == "s3" and not is_server(cfg.tracking_uri)


def s3_environment(cfg: Any) -> dict[str, str]:
    """Variables (never the credentials) a process reading or writing ``cfg``'s S3 artifacts needs."""
    return {"MLFLOW_S3_ENDPOINT_URL": cfg.storage.endpoint_url} if cfg.storage.endpoint_url else {}


def client_environment(cfg: Any) -> dict[str, str]:
    """Variables a process needs to load this project's registered models (besides AWS credentials for S3)."""
    return {"MLFLOW_TRACKING_URI": cfg.tracking_uri, **(s3_environment(cfg) if direct_s3(cfg) else {})}


def as_prefix(environment: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in environment.items())
