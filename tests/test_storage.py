"""storage=s3 checks against a real S3 server (SeaweedFS on a free loopback port): every way a store can be wrong
fails in seconds with a message that names the endpoint and the cause, before any run or model load."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devservices.ports import free_port
from devservices.s3 import identity
from lifecycle.integrations import storage
from lifecycle.stage import StageError

READER = {"AWS_ACCESS_KEY_ID": "reader-key", "AWS_SECRET_ACCESS_KEY": "reader-secret-123"}


@pytest.fixture(scope="module")
def store(local_s3):
    return local_s3(bucket="models", more_identities=(identity("reader", *READER.values(), actions=("Read", "List")),))


@pytest.fixture
def s3_cfg(compose_cfg, store, monkeypatch):
    """(overrides...) -> storage config for the test server, with its credentials exported."""
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)

    def make(*overrides: str):
        cfg = compose_cfg(
            "storage=s3", f"storage.endpoint_url={store.endpoint_url}", "storage.bucket=models", *overrides
        )
        return cfg.storage

    return make


def test_a_good_store_passes_and_leaves_nothing_behind(s3_cfg, store):
    storage.check(s3_cfg())
    assert store.keys() == []  # the write probe was deleted


@pytest.mark.parametrize(
    "env,overrides,message",
    [
        ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, [], "AWS_SECRET_ACCESS_KEY does not match the access key"),
        ({"AWS_ACCESS_KEY_ID": "nobody"}, [], "the access key in AWS_ACCESS_KEY_ID is not known there"),
        ({}, ["storage.bucket=no-such-bucket"], "bucket 'no-such-bucket' does not exist; create it, or set "),
        (READER, [], "may not read and write s3://models"),
    ],
    ids=["wrong-secret", "unknown-key", "missing-bucket", "read-only"],
)
def test_each_fault_names_the_endpoint_and_the_cause(s3_cfg, store, monkeypatch, env, overrides, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StageError) as error:
        storage.check(s3_cfg(*overrides))
    assert message in str(error.value) and store.endpoint_url in str(error.value)


def test_an_unreachable_endpoint_says_so(s3_cfg):
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StageError, match=f"cannot reach the S3 endpoint {closed}: is the server running"):
        storage.check(s3_cfg(f"storage.endpoint_url={closed}"))


class FailingStore(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request 500 InternalError, as SeaweedFS does on a nearly full disk."""

    BODY = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"

    def _fail(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _fail

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def failing_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingStore)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failing_server_is_named_as_the_cause(s3_cfg, failing_endpoint):
    with pytest.raises(StageError) as error:
        storage.check(s3_cfg(f"storage.endpoint_url={failing_endpoint}"))
    assert f"S3 endpoint {failing_endpoint}: the server itself failed (InternalError); see its log" in str(error.value)


def test_missing_credentials_say_which_variable(s3_cfg, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StageError, match="needs AWS_SECRET_ACCESS_KEY in the environment"):
        storage.check(s3_cfg())


def test_a_missing_bucket_is_created_when_asked(s3_cfg, store):
    storage.check(s3_cfg("storage.bucket=made-on-demand", "storage.create_bucket=true"))
    assert "made-on-demand" in [b["Name"] for b in store.client().list_buckets()["Buckets"]]


def test_mlflow_is_pointed_at_the_endpoint(s3_cfg, store, monkeypatch):
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    storage.use_for_mlflow(s3_cfg())
    import os

    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == store.endpoint_url


def test_an_experiment_in_another_kind_of_store_is_refused(tmp_path):
    import mlflow

    from lifecycle.integrations import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        tracking.ensure_experiment("qa", f"file://{tmp_path}/artifacts")
        with pytest.raises(
            StageError, match="MLflow cannot move an experiment's artifacts: use another experiment_name"
        ):
            tracking.ensure_experiment("qa", "s3://models/lifecycle/mlartifacts")
    finally:
        mlflow.set_tracking_uri(None)
