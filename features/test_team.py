"""Steps of features/team.feature: a PostgreSQL, an S3 server and an `mlflow server` on them for the whole feature
(module fixtures), clients that know only the server's URL, and a Ray cluster for the sweep scenario."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from devservices.ports import free_port
from devservices.postgres import LocalPostgres, bindir

from .conftest import (
    ROOT,
    Invocation,
    Server,
    Workspace,
    launch,
    ray_cluster,
    serving_command,
    start_server,
    summary_table,
    sweep_run,
    template_without_question,
    tool_missing,
)

scenarios("team.feature")

# what only the server knows: a client that had them could bypass it
SERVER_SECRETS = ("PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
OLD_SCHEMA = "451aebb31d03"  # MLflow's first schema revision: a database nobody upgraded
TEXT_LIMIT = 1_000_000  # artifacts read whole for the secret check (model weights are larger, and binary)


@dataclass
class Team:
    postgres: LocalPostgres
    store: object  # conftest.S3Store
    server: Server

    @property
    def secrets(self) -> list[str]:
        return [self.postgres.password, self.store.secret]

    def server_command(self, *overrides: str) -> str:
        return server_command(self.postgres, *overrides)


def server_command(postgres: LocalPostgres, *overrides: str) -> str:
    """The team's tracking server on ``postgres``, as the README starts it."""
    return (
        "python main.py mode=server-config serve.run=true backend=postgresql "
        f"backend.port={postgres.port} {' '.join(overrides)}"
    )


@pytest.fixture(scope="module")
def postgres():
    """PostgreSQL on a free loopback port, in a folder its unprivileged user can reach, with a random password and
    a second database, ``old_schema``, left at MLflow's first schema revision."""
    try:
        bindir()
    except RuntimeError as exc:
        tool_missing(f"no PostgreSQL here: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="team-pg-"))
    folder.chmod(0o711)  # traversable by the postgres user when the tests run as root
    server = LocalPostgres(folder / "data", free_port(), "mlflow", secrets.token_urlsafe(16), "mlflow").start()
    server.psql('CREATE DATABASE "old_schema" OWNER "mlflow";')
    server.psql(
        "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL);"
        f"INSERT INTO alembic_version VALUES ('{OLD_SCHEMA}'); ALTER TABLE alembic_version OWNER TO mlflow;",
        database="old_schema",
    )
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def team(postgres, local_s3, tmp_path_factory) -> Team:
    """The team's tracking server, started the way the README says, on PostgreSQL with artifacts in S3."""
    store = local_s3(bucket="mlflow")
    host = Workspace(tmp_path_factory.mktemp("team-server"), None)
    command = server_command(postgres, "storage=s3", f"storage.endpoint_url={store.endpoint_url}")

    def argv(port: int) -> list[str]:
        return [*host.argv(command), f"serve.tracking_port={port}"]

    env = host.env({"PGPASSWORD": postgres.password, **store.env})
    server = launch(argv, env, host.data_dir / "server.log", timeout_s=120)
    yield Team(postgres, store, server)
    server.stop()


@dataclass
class TeamClient(Workspace):
    """A client's data directory: its commands get ``tracking_uri=<the server>`` and none of the server's secrets."""

    server_url: str = ""

    @property
    def tracking_uri(self) -> str:
        return self.server_url

    def argv(self, command: str) -> list[str]:
        return [*super().argv(command), f"tracking_uri={self.server_url}"]

    def env(self, extra: dict[str, str], unset: tuple[str, ...] = ()) -> dict[str, str]:
        return super().env(extra, (*unset, *SERVER_SECRETS))


@pytest.fixture
def workspace(team, tmp_path, model_cache) -> TeamClient:
    return TeamClient(tmp_path / "client", model_cache, team.server.base)


def run_once(team: Team, command: str, tmp_path_factory, model_cache, runs: dict) -> Invocation:
    """A client command run once for the team's server (the session's ``_shared_runs``, as conftest's ``has_run``
    keeps them); later scenarios read the same result."""
    key = ("team", team.server.base, command)
    if key not in runs:
        client = TeamClient(tmp_path_factory.mktemp("team-client"), model_cache, team.server.base)
        runs[key] = client.run(command)
    return runs[key]


@when(
    parsers.parse('a client runs "{command}" through the team\'s tracking server'),
    target_fixture="invocation",
)
def client_runs(team, command, tmp_path_factory, model_cache, _shared_runs) -> Invocation:
    return run_once(team, command, tmp_path_factory, model_cache, _shared_runs)


@given("the lifecycle ran through the team's tracking server")
def lifecycle_ran(team, tmp_path_factory, model_cache, _shared_runs):
    """`mode=all` through the server (once for the feature): version 1 registered and promoted (both aliases)."""
    invocation = run_once(team, "python main.py mode=all", tmp_path_factory, model_cache, _shared_runs)
    assert invocation.returncode == 0, invocation.explain()


@then("it succeeds, with its runs in PostgreSQL and the registered model's files in the bucket")
def runs_in_postgres(invocation: Invocation, team: Team):
    assert invocation.returncode == 0, invocation.explain()
    stages = team.postgres.psql("SELECT value FROM tags WHERE key = 'lifecycle.stage';", database="mlflow").split()
    assert {"experiment", "deploy", "test", "promote", "serve"} <= set(stages), stages
    version = team.postgres.psql(
        "SELECT source FROM model_versions WHERE name = 'langchain-e2e-model' AND version = 1;", database="mlflow"
    )
    assert version.strip(), "no version 1 in the database"
    keys = team.store.keys("lifecycle/mlartifacts")
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(key.endswith(".safetensors") for key in keys), keys[:20]


@then("neither the database password nor the S3 secret is in any output, param, tag or artifact")
def no_secret_anywhere(invocation: Invocation, team: Team):
    dump = team.postgres.dump("mlflow")  # every run's params and tags, the registry, the prompts
    assert "langchain-e2e-model" in dump
    s3 = team.store.client()
    texts = [invocation.output, team.server.log.read_text(), dump]
    for item in s3.list_objects_v2(Bucket=team.store.bucket, Prefix="lifecycle").get("Contents", []):
        if item["Size"] < TEXT_LIMIT:
            texts.append(s3.get_object(Bucket=team.store.bucket, Key=item["Key"])["Body"].read().decode("latin-1"))
    assert len(texts) > 10, "too few artifacts to be a real check"
    for secret in team.secrets:
        assert not [text[:200] for text in texts if secret in text]


@when(
    parsers.parse('two clients run "{command}" at once, with prompts "{first}" and "{second}"'),
    target_fixture="invocations",
)
def two_clients(team, tmp_path, model_cache, command, first, second) -> list[Invocation]:
    clients = [TeamClient(tmp_path / name, model_cache, team.server.base) for name in (first, second)]
    names = (first, second)
    procs = [
        subprocess.Popen(
            client.argv(f"{command} prompt={name}"),
            cwd=ROOT,
            env=client.env({"TOKENIZERS_PARALLELISM": "false"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for client, name in zip(clients, names, strict=True)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    return [
        Invocation(f"{command} prompt={name}", proc.returncode, output, "", 0.0)
        for name, proc, output in zip(names, procs, outputs, strict=True)
    ]


@then("both succeed, and the server holds a finished experiment run for each prompt")
def both_recorded(invocations: list[Invocation], workspace: TeamClient):
    for invocation in invocations:
        assert invocation.returncode == 0, invocation.explain()
    parents = workspace.runs("tags.`lifecycle.mode` = 'experiment' and attributes.status = 'FINISHED'")
    prompts = Counter(run.data.params["prompt"] for run in parents)
    assert prompts["qa-concise"] >= 1 and prompts["qa-detailed"] >= 1, prompts
    for run in workspace.runs("tags.`lifecycle.stage` = 'experiment'"):
        assert run.info.status == "FINISHED" and "fact_agreement/mean" in run.data.metrics, run.data


@when(
    parsers.parse('"python -m serving" serves "{uri}" with only the tracking server\'s URL'),
    target_fixture="server",
)
def serve_from_team(workspace: TeamClient, uri, tmp_path):
    server = start_server(workspace, {}, tmp_path / "serving.log", serving_command(uri))
    yield server
    server.stop()


def registry(workspace: TeamClient) -> tuple[list[str], str]:
    client = workspace.client()
    versions = sorted(v.version for v in client.search_model_versions("name = 'langchain-e2e-model'"))
    return versions, client.get_model_version_by_alias("langchain-e2e-model", "challenger").version


@pytest.fixture
def registry_before(workspace: TeamClient) -> tuple[list[str], str]:
    return registry(workspace)


@when(parsers.parse('the database stops while a client runs "{command}"'), target_fixture="invocation")
def database_stops(workspace: TeamClient, team: Team, registry_before, command) -> Invocation:
    """The client runs until its deploy stage starts; PostgreSQL then stops as a crash would (and starts again once
    the client has finished, for the scenarios after this one)."""
    proc = subprocess.Popen(
        workspace.argv(command),
        cwd=ROOT,
        env=workspace.env({"PYTHONUNBUFFERED": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "stage deploy: starting" in line:
            team.postgres.stop("immediate")
            break
    try:
        rest, _ = proc.communicate(timeout=600)
    finally:
        team.postgres.start()
    return Invocation(command, proc.returncode, "".join(seen) + rest, "", 0.0)


@then('the output says "Nothing was registered", with no traceback')
def nothing_registered(invocation: Invocation):
    assert "Nothing was registered" in invocation.output, invocation.explain()
    assert "Traceback" not in invocation.output, invocation.explain()


@then("once the database is back, the registry holds the versions it held before, the alias unchanged")
def registry_unchanged(workspace: TeamClient, registry_before):
    assert registry(workspace) == registry_before


@when(parsers.parse('the team\'s tracking server is started with "{setting}"'), target_fixture="invocation")
def server_started_with(workspace: TeamClient, team: Team, setting) -> Invocation:
    """``NAME=value`` in capitals sets an environment variable of the server; anything else is an override."""
    name, _, value = workspace.expand(setting).partition("=")
    env = {"PGPASSWORD": team.postgres.password}
    overrides = [f"serve.tracking_port={free_port()}"]
    if name.isupper():
        env[name] = value
    else:
        overrides.append(f"{name}={value}")
    host = Workspace(workspace.data_dir, None)  # the server's side: the password is in its environment
    return host.run(team.server_command(*overrides), env=env, timeout=120)


@when(parsers.parse('a client sweeps "{command}" on SQLite'), target_fixture="invocation")
def sweep_on_sqlite(workspace: TeamClient, command) -> Invocation:
    return Workspace(workspace.data_dir, workspace.model_cache).run(command, timeout=120)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray cluster for this module's sweeps (features/conftest.py, ray_cluster)."""
    with ray_cluster(tmp_path_factory.mktemp("ray")) as address:
        yield address


@given(parsers.parse("a Ray cluster on loopback with {cpus:d} CPUs"), target_fixture="ray_address")
def ray_ready(ray_head, cpus) -> str:
    assert cpus == 2, "the module's cluster has 2 CPUs"
    return ray_head


@when(parsers.parse('a client sweeps "{command}" on the cluster'), target_fixture="invocation")
def sweep_on_ray(workspace: TeamClient, ray_address, tmp_path, command) -> Invocation:
    extra = template_without_question(tmp_path / "extra_conf", "broken")
    return workspace.run(
        f"{command} hydra.launcher.ray.init.address={ray_address} hydra.searchpath=[file://{extra}]", timeout=900
    )


BEST_AND_LOADS = 'the best template\'s prompt version has the alias "{alias}", and each worker loaded the model once'


@then(parsers.parse(BEST_AND_LOADS))
def best_and_loaded_once(workspace: TeamClient, invocation: Invocation, alias):
    import mlflow

    best = summary_table(workspace)[0]
    assert best["status"] == "completed", best
    version = int(best["version"])  # a number column of the logged table: 1.0
    assert f"prompt alias '{alias}' -> prompts:/{best['prompt']}/{version}" in invocation.output
    assert mlflow.genai.load_prompt(f"prompts:/{best['prompt']}@{alias}").version == version
    loads = defaultdict(list)
    for run in workspace.child_runs(sweep_run(workspace)):
        if "lifecycle.model_reused" in run.data.tags:
            loads[run.data.tags["lifecycle.sweep_worker"]].append(run.data.tags["lifecycle.model_reused"])
    assert loads and all(flags.count("false") == 1 for flags in loads.values()), loads  # one load per worker
