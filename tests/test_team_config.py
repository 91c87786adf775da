"""A team's settings without the processes: the backend group, what a Ray sweep needs from its launcher, secrets
in database URLs, and tracking failures in words. The real PostgreSQL, server and cluster are in
features/team.feature."""

from __future__ import annotations

import pytest

from lifecycle import redact
from lifecycle.integrations import database, tracking
from lifecycle.stage import StageError
from lifecycle.sweeps import launchers


def test_the_default_backend_is_the_sqlite_file_under_data_dir(compose_cfg, tmp_path):
    cfg = compose_cfg()
    assert cfg.backend.kind.value == "sqlite"
    assert cfg.tracking_uri == cfg.backend.uri == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"


def test_postgresql_is_a_url_without_a_password(compose_cfg):
    cfg = compose_cfg("backend=postgresql", "backend.port=5433", "backend.database=team")
    assert cfg.tracking_uri == "postgresql+psycopg://mlflow@127.0.0.1:5433/team"


def test_a_database_url_with_a_password_is_refused_before_connecting():
    with pytest.raises(StageError, match="carries a password: remove it and export PGPASSWORD"):
        database.check("postgresql+psycopg://mlflow:hunter22@127.0.0.1:1/mlflow")


def test_a_password_in_any_url_is_redacted():
    text = "could not connect to postgresql+psycopg://mlflow:hunter22@db.internal:5432/mlflow"
    assert redact.redact(text, set()) == "could not connect to postgresql+psycopg://mlflow:***@db.internal:5432/mlflow"


def test_pgpassword_counts_as_a_secret():
    assert redact.secret_values({"PGPASSWORD": "team-password", "PGHOST": "db.internal"}) == {"team-password"}


def test_a_ray_sweep_refuses_sqlite_with_the_reason(compose_cfg):
    cfg = compose_cfg("hydra/launcher=ray", with_hydra=True)
    assert launchers.is_ray(cfg)
    with pytest.raises(StageError, match="SQLite is one file on this machine"):
        launchers.check(cfg)


def test_a_ray_sweep_through_a_server_gets_the_sweep_in_its_tasks_environment(compose_cfg):
    cfg = compose_cfg(
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.address=127.0.0.1:6379",
        "tracking_uri=http://127.0.0.1:5050",
        with_hydra=True,
    )
    launchers.check(cfg)
    launchers.prepare(cfg, {"LIFECYCLE_SWEEP_RUN_ID": "abc"})
    ray = cfg.hydra.launcher.ray
    assert ray.remote.runtime_env.env_vars == {"LIFECYCLE_SWEEP_RUN_ID": "abc"}
    assert "object_store_memory" in ray.init and ray.init.object_store_memory is None  # the cluster's own store


def test_other_launchers_are_left_alone(compose_cfg):
    cfg = compose_cfg(with_hydra=True)
    before = dict(cfg.hydra.launcher)
    launchers.check(cfg)
    launchers.prepare(cfg, {"LIFECYCLE_SWEEP_RUN_ID": "abc"})
    assert dict(cfg.hydra.launcher) == before


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("API request to http://h:5050/api/2.0/mlflow/runs/get failed (too many 503 error responses)", "HTTP 5xx"),
        ("Max retries exceeded with url: /api (Caused by NewConnectionError: Connection refused)", "does not answer"),
    ],
)
def test_a_failing_tracking_server_is_named(error, expected):
    assert expected in tracking.explain(RuntimeError(error), "http://h:5050")
    assert tracking.explain(RuntimeError(error), "sqlite:///x.db") == f"RuntimeError: {error}"
