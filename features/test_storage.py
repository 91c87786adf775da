from __future__ import annotations

import subprocess
import time

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from devservices.ports import free_port

from .conftest import ROOT, Invocation, Workspace, launch, serving_command, start_server

scenarios("storage.feature")

MODEL = "langchain-e2e-model"
UPLOAD_TIMEOUT_S = 300
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="module")
def s3_store(local_s3):
    return local_s3(bucket="mlflow")


@given(parsers.parse('a local S3 server with the bucket "{bucket}"'), target_fixture="store")
def store_with_bucket(s3_store, bucket):
    assert s3_store.bucket == bucket
    return s3_store


def against(store, command: str) -> str:
    """The command pointed at the test server (unless it names an endpoint itself)."""
    return command if "storage.endpoint_url=" in command else f"{command} storage.endpoint_url={store.endpoint_url}"


@when(parsers.parse('I run "{command}" against the S3 server'), target_fixture="invocation")
def run_against_s3(workspace: Workspace, store, command):
    return workspace.run(against(store, command), env=store.env)


@given("a model deployed to the S3 server", target_fixture="workspace")
def deployed_to_s3(tmp_path, model_cache, store) -> Workspace:
    """A fresh data directory where ``mode=deploy`` registered version 1 with its files in the bucket."""
    workspace = Workspace(tmp_path / "data", model_cache)
    deployed = workspace.run(against(store, "python main.py storage=s3 mode=deploy"), env=store.env)
    assert deployed.returncode == 0, deployed.explain()
    return workspace


WITH_ENV = r'I run "(?P<command>[^"]+)" against the S3 server with "(?P<env>[^"]*)"'  # env may be empty


@when(parsers.re(WITH_ENV), target_fixture="invocation")
def run_with_env(workspace: Workspace, store, command, env):
    changed = dict(item.split("=", 1) for item in env.split())
    return workspace.run(against(store, command), env={**store.env, **changed})


@when(parsers.parse('I run "{command}" against a closed port'), target_fixture="invocation")
def run_against_closed_port(workspace: Workspace, store, command):
    return workspace.run(f"{command} storage.endpoint_url=http://127.0.0.1:{free_port()}", env=store.env)


@then(parsers.parse('it fails naming the S3 endpoint and "{cause}"'))
def fails_naming_endpoint(invocation: Invocation, store, cause):
    assert invocation.returncode != 0, invocation.explain()
    assert f"S3 endpoint {store.endpoint_url}" in invocation.output and cause in invocation.output, invocation.explain()


def model_in_bucket(store, prefix: str) -> None:
    keys = store.keys(prefix)
    assert any(k.endswith("/model.safetensors") for k in keys), keys
    assert any(k.endswith("/MLmodel") for k in keys), keys


@then(parsers.parse('it succeeds, with the registered model\'s weights and MLmodel in the bucket under "{prefix}"'))
def succeeds_into_bucket(invocation: Invocation, store, prefix):
    assert invocation.returncode == 0, invocation.explain()
    model_in_bucket(store, prefix)


@then(
    parsers.parse(
        'it succeeds, with the registered model\'s weights and MLmodel in the bucket under "{prefix}", where the '
        "experiment keeps its artifacts"
    )
)
def succeeds_into_experiment_bucket(workspace: Workspace, invocation: Invocation, store, prefix):
    succeeds_into_bucket(invocation, store, prefix)
    experiment = workspace.client().get_experiment_by_name("langchain-e2e-experiment")
    assert experiment.artifact_location == f"s3://{store.bucket}/{prefix}"


@then("the S3 secret appears nowhere under the data directory, in MLflow params or tags, or in the output")
def no_secret(workspace: Workspace, store, invocation: Invocation):
    secret = store.secret.encode()
    files = [path for path in workspace.data_dir.rglob("*") if path.is_file()]
    assert files and not [path for path in files if secret in path.read_bytes()]
    for run in workspace.runs(""):
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not [value for value in values if store.secret in value], run.info.run_id
    assert store.secret not in invocation.output


def wait_for_upload(store, proc: subprocess.Popen, before: set[str]) -> None:
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while not set(store.keys("lifecycle/mlartifacts")) - before:
        assert proc.poll() is None, "the deploy ended before it uploaded anything"
        assert time.monotonic() < deadline, "no upload began"
        time.sleep(0.05)  # polling the bucket for the upload's first object


@when(
    parsers.parse('the S3 server stops while "{command}" uploads the model'),
    target_fixture="invocation",
)
def stop_during_upload(workspace: Workspace, store, command):
    before = set(store.keys("lifecycle/mlartifacts"))
    started = time.perf_counter()
    proc = subprocess.Popen(
        workspace.argv(against(store, command)),
        cwd=ROOT,
        env=workspace.env(store.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_upload(store, proc, before)
        store.server.stop()
        stdout, stderr = proc.communicate(timeout=UPLOAD_TIMEOUT_S)
    finally:
        proc.kill()
    return Invocation(command, proc.returncode, stdout, stderr, time.perf_counter() - started)


@when(parsers.parse('the S3 server is back and "{command}" runs again'), target_fixture="invocation")
def back_again(workspace: Workspace, store, command):
    store.restart()
    return workspace.run(against(store, command), env=store.env)


REGISTRY = r'the registry holds (?P<count>\d+) versions? with alias "(?P<alias>[^"]+)" on version (?P<version>\d+)'


def registry_state(workspace: Workspace, count: int, alias: str, version: int) -> None:
    client = workspace.client()
    assert len(client.search_model_versions(f"name='{MODEL}'")) == count
    assert int(client.get_model_version_by_alias(MODEL, alias).version) == version


@then(
    parsers.re(f"it fails saying the endpoint cannot be reached, and {REGISTRY}"),
    converters={"count": int, "version": int},
)
def unreachable_and_unchanged(workspace: Workspace, invocation: Invocation, count, alias, version):
    assert invocation.returncode != 0, invocation.explain()
    for text in ("cannot reach the S3 endpoint", f"Nothing was registered; alias {alias!r} still points to version"):
        assert text in invocation.output, invocation.explain()
    registry_state(workspace, count, alias, version)


@then(parsers.re(f"it succeeds, and {REGISTRY}"), converters={"count": int, "version": int})
def succeeds_and_registered(workspace: Workspace, invocation: Invocation, count, alias, version):
    assert invocation.returncode == 0, invocation.explain()
    registry_state(workspace, count, alias, version)


@given(parsers.parse('a tracking server started by "{command}"'), target_fixture="tracking_server")
def tracking_server(workspace: Workspace, store, command, tmp_path):
    def argv(port: int) -> list[str]:
        return [*workspace.argv(against(store, command)), f"serve.tracking_port={port}"]

    server = launch(argv, workspace.env(store.env), tmp_path / "tracking-server.log", timeout_s=120)
    yield server
    server.stop()


@when(
    parsers.parse('I run "{command}" through the tracking server without AWS credentials'),
    target_fixture="invocation",
)
def run_through_server(workspace: Workspace, tracking_server, command):
    words = f"{command} tracking_uri={tracking_server.base} storage.prefix=proxied"
    return workspace.run(words, unset=(*CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL"))


@then(
    "the deploy run's artifacts went through the server's proxy, leaving no copy of the model in the temporary folder"
)
def proxied(workspace: Workspace, tracking_server):
    import mlflow

    client = mlflow.MlflowClient(tracking_server.base)
    experiment = client.get_experiment_by_name("langchain-e2e-experiment")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`lifecycle.stage` = 'deploy'")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    no_model_left(workspace)


@then("no copy of the model is left in the temporary folder")
def no_model_left(workspace: Workspace):
    """MLflow downloads remote artifacts into a temporary folder that it never removes; ours are removed once
    loaded, so /tmp does not fill with half a gigabyte per load (the commands' TMPDIR is the workspace's)."""
    assert not sorted(workspace.temp_dir.rglob("*.safetensors"))


@when(parsers.parse('"python -m serving" serves "{uri}" from the S3 server'), target_fixture="server")
def serve_from_s3(workspace: Workspace, store, uri, tmp_path):
    env = {**store.env, "MLFLOW_S3_ENDPOINT_URL": store.endpoint_url}
    server = start_server(workspace, env, tmp_path / "serving.log", serving_command(uri))
    yield server
    server.stop()
