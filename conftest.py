"""Fixtures shared by tests/ and features/: the real offline model (converted once per session) and real S3 servers
on free loopback ports."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from devservices.ports import free_port
from devservices.s3 import LocalS3

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The folder holding the converted offline model (the first conversion takes ~25 s; it is half a gigabyte, so
    one per run: the pytest-xdist workers share it, and the first to get the lock converts). Set
    LIFECYCLE_TEST_MODEL_CACHE to keep it between runs."""
    from filelock import FileLock
    from hydra import compose, initialize_config_dir

    from lifecycle.config import register_configs
    from lifecycle.integrations.models import MARKER, resolve_model_folder

    given = os.environ.get("LIFECYCLE_TEST_MODEL_CACHE")
    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # the workers' base folders sit in the run's
    cache = Path(given) if given else run_folder / "model-cache"
    cache.mkdir(parents=True, exist_ok=True)
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.model_cache={cache}", "data_dir=unused"])
    with FileLock(str(cache / ".converting.lock")):
        folder = resolve_model_folder(cfg.model, cache)
    assert (folder / MARKER).exists()
    return cache


# The heaviest test files first, so that two workers (make test: pytest -n 2 --dist loadfile) end together instead
# of one waiting for the other's last long feature (measured: docs/tests.md). Every other file keeps its place.
HEAVIEST_FIRST = (
    "features/test_traces.py",
    "features/test_export.py",
    "features/test_team.py",
    "features/test_storage.py",
    "features/test_serving.py",
    "features/test_contract.py",
    "features/test_model_test.py",
    "features/test_sweep.py",
    "tests/test_decoding.py",
    "features/test_promote.py",
    "features/test_deploy.py",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    def weight(item) -> int:
        path = item.path.resolve().relative_to(ROOT).as_posix()
        return HEAVIEST_FIRST.index(path) if path in HEAVIEST_FIRST else len(HEAVIEST_FIRST)

    items.sort(key=weight)  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def smollm2(model_cache):
    """The real offline model (SmolLM2-135M-Instruct), loaded once per session."""
    from core.model_folder import load_model

    return load_model(model_cache / "smollm2", "chat_template")


@dataclass
class S3Store:
    """A real S3 server for a test (SeaweedFS through devservices.s3), with its credentials."""

    server: LocalS3
    key: str
    secret: str
    bucket: str

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def restart(self) -> None:
        """Start again on a new free port, with the same data (artifact URIs name the bucket, not the endpoint)."""
        self.server.stop()
        self.server.port = free_port()
        self.server.endpoint_url = f"http://127.0.0.1:{self.server.port}"
        self.server.start(self.log)

    @property
    def log(self) -> Path:
        return self.server.data_dir.parent / "weed.log"


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """start(**more) -> a new S3Store on a free loopback port with a bucket and random credentials; all stopped at
    the end of the session."""
    started: list[S3Store] = []

    def start(bucket: str = "mlflow", more_identities: tuple[dict, ...] = ()) -> S3Store:
        folder = tmp_path_factory.mktemp("s3")
        key, secret = f"key-{secrets.token_hex(4)}", f"secret-{secrets.token_hex(12)}"
        server = LocalS3(folder / "data", free_port(), key, secret, bucket, more_identities)
        store = S3Store(server, key, secret, bucket)
        server.start(store.log)
        started.append(store)
        return store

    yield start
    for store in started:
        store.server.stop()
