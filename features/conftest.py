"""Shared fixtures and generic steps for the end-to-end features.

Every scenario runs the real CLI (`python main.py ...`) in a subprocess against a real embedded MLflow backend in a
temporary data directory, with the real offline model. The converted model folder is shared by the whole session
(it is half a gigabyte): set LIFECYCLE_TEST_MODEL_CACHE to keep it between sessions.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pytest_bdd import given, parsers, then, when

from devservices.ports import free_port
from lifecycle import processes

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "langchain-e2e-experiment"


INHERITED_MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # set by mlflow.set_*_uri in this process


def tool_missing(reason: str) -> None:
    """A scenario whose tool (Chromium, PostgreSQL, podman) is not here: skipped, saying why; failed under
    LIFECYCLE_STRICT=1 (.ci/run), where `make test-tools` must have installed it."""
    if os.environ.get("LIFECYCLE_STRICT") == "1":
        pytest.fail(f"{reason} (LIFECYCLE_STRICT=1: every test tool is required)")
    pytest.skip(reason)


@dataclass
class Invocation:
    command: str
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        return f"`{self.command}` exited {self.returncode} after {self.elapsed_s:.1f} s:\n{self.output[-4000:]}"


@dataclass
class Workspace:
    data_dir: Path
    model_cache: Path | None  # None: the default cache under data_dir (scenarios that never load the model)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.data_dir.resolve()}/mlflow.db"

    def env(self, extra: dict[str, str], unset: tuple[str, ...] = ()) -> dict[str, str]:
        """Environment for a subprocess of this workspace: this one's, without the MLflow URIs earlier tests set and
        ``unset``, with the workspace's TMPDIR, plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if k not in (*INHERITED_MLFLOW_VARS, *unset)}
        return {**env, "TMPDIR": str(self.temp_dir), **extra}

    @property
    def temp_dir(self) -> Path:
        """TMPDIR of this workspace's commands, so a scenario can see what they leave behind."""
        folder = self.data_dir.with_name(f"{self.data_dir.name}-tmp")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def argv(self, command: str) -> list[str]:
        """`python main.py <overrides>` with this workspace's data_dir and the session's model cache."""
        words = shlex.split(command)
        assert words[:2] == ["python", "main.py"], f"not a main.py command: {command}"
        ours = [f"data_dir={self.data_dir}", "experiment.progress_bar=false"]
        if self.model_cache:
            ours.append(f"paths.model_cache={self.model_cache}")
        user = words[2:]
        leading = list(itertools.takewhile(lambda word: word.startswith("-"), user))
        # a leading flag (-m) stays first, as argparse wants; ours come before the user's overrides, so that
        # trailing flags (--cfg job) stay last
        return [sys.executable, "main.py", *leading, *ours, *user[len(leading) :]]

    def run(
        self, command: str, env: dict[str, str] | None = None, timeout: float = 900, unset: tuple[str, ...] = ()
    ) -> Invocation:
        started = time.perf_counter()
        proc = subprocess.run(
            self.argv(command),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env({"TOKENIZERS_PARALLELISM": "false", **(env or {})}, unset),
        )
        return Invocation(command, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)  # model and prompt URIs resolve through the process-wide
        mlflow.set_registry_uri(self.tracking_uri)  # registry URI, which an earlier test may have set elsewhere
        return mlflow.MlflowClient(self.tracking_uri, self.tracking_uri)

    def runs(self, filter_string: str) -> list:
        """Runs of the default experiment matching a filter, newest first."""
        client = self.client()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        return client.search_runs([experiment.experiment_id], filter_string, order_by=["start_time DESC"])

    def stage_runs(self, stage: str) -> list:
        return self.runs(f"tags.`lifecycle.stage` = '{stage}'")

    def child_runs(self, run) -> list:
        return self.runs(f"tags.mlflow.parentRunId = '{run.info.run_id}'")

    def expand(self, text: str) -> str:
        """``<data_dir>``: this workspace's; ``<free_port>``: a free loopback port."""
        text = text.replace("<data_dir>", str(self.data_dir.resolve()))
        return text.replace("<free_port>", str(free_port())) if "<free_port>" in text else text


@pytest.fixture(scope="session")
def registered_workspace(tmp_path_factory, model_cache) -> Workspace:
    """A backend where `mode=deploy` registered the model once and `mode=promote` made it the champion (with no
    champion before, without a comparison): version 1 has both aliases. Shared by the scenarios that only read it."""
    workspace = Workspace(tmp_path_factory.mktemp("registered"), model_cache)
    for command in ("python main.py mode=deploy", "python main.py mode=promote"):
        invocation = workspace.run(command)
        assert invocation.returncode == 0, invocation.explain()
    return workspace


@given("a fresh data directory", target_fixture="workspace")
def fresh_workspace(tmp_path, model_cache) -> Workspace:
    """An empty data directory of the scenario's own, with the session's converted model."""
    return Workspace(tmp_path / "data", model_cache)


@given("a scratch directory", target_fixture="workspace")
def scratch_workspace(tmp_path) -> Workspace:
    """An empty data directory for a command that must not need the model (it would convert its own)."""
    return Workspace(tmp_path / "data", None)


@pytest.fixture(scope="session")
def _shared_runs() -> dict:
    return {}


@given("a data directory shared by this feature", target_fixture="workspace")
def shared_workspace(request, tmp_path_factory, model_cache, _shared_runs) -> Workspace:
    """One data directory for every scenario of this feature (a session fixture keeps it), so a command that a
    Background runs there runs once."""
    key = ("workspace", request.node.module.__name__)
    if key not in _shared_runs:
        _shared_runs[key] = Workspace(tmp_path_factory.mktemp("shared"), model_cache)
    return _shared_runs[key]


@given(parsers.parse('"{command}" has run there'), target_fixture="invocation")
def has_run(workspace: Workspace, command: str, _shared_runs) -> Invocation:
    """Run a command once per workspace; later scenarios of the feature read the same result."""
    key = (workspace.data_dir, command)
    if key not in _shared_runs:
        _shared_runs[key] = workspace.run(command)
    return _shared_runs[key]


@given("a model deployed and promoted to champion", target_fixture="workspace")
def registered(registered_workspace) -> Workspace:
    """The session's data directory where version 1 is both the challenger and the champion (shared: scenarios
    only read it, or change what they restore)."""
    return registered_workspace


@when(parsers.parse('I run "{command}"'), target_fixture="invocation")
def run_command(workspace: Workspace, command: str) -> Invocation:
    """``python main.py ...`` in the workspace (its data_dir, the session's model cache); <data_dir> and <free_port>
    expanded."""
    return workspace.run(workspace.expand(command))


@then("it succeeds")
def succeeds(invocation: Invocation):
    """The command exited 0."""
    assert invocation.returncode == 0, invocation.explain()


@when(parsers.parse('I run "{first}", then "{command}"'), target_fixture="invocation")
def run_two_commands(workspace: Workspace, first: str, command: str) -> Invocation:
    """``first`` must succeed; the invocation is the second command's."""
    before = workspace.run(workspace.expand(first))
    assert before.returncode == 0, before.explain()
    return workspace.run(workspace.expand(command))


def evaluation_datasets(workspace: Workspace, name: str) -> list:
    from mlflow.genai.datasets import search_datasets

    workspace.client()  # points this process at the workspace's store
    return search_datasets(filter_string=f"name = '{name}'")


@then(
    parsers.parse(
        'the latest {stage} run records the evaluation dataset "{name}" version {version}, holding {count:d} questions'
    )
)
def records_dataset(workspace: Workspace, stage: str, name: str, version: str, count: int):
    """The stage's latest run has the dataset as its "evaluation" input and the name and version as tags; the
    dataset holds ``count`` records."""
    run = workspace.stage_runs(stage)[0]
    assert (run.data.tags["lifecycle.dataset"], run.data.tags["lifecycle.dataset_version"]) == (name, version)
    inputs = {(i.dataset.name, i.dataset.source_type) for i in run.inputs.dataset_inputs}
    assert (name, "mlflow_evaluation_dataset") in inputs, inputs
    (dataset,) = evaluation_datasets(workspace, name)
    assert len(dataset.to_df()) == count


@then(parsers.parse('it fails with "{text}"'))
def fails_with(invocation: Invocation, workspace: Workspace, text: str):
    """The command exited non-zero and its output (stdout and stderr) contains ``text``."""
    assert invocation.returncode != 0, invocation.explain()
    assert workspace.expand(text) in invocation.output, invocation.explain()


def printed(invocation: Invocation, workspace: Workspace, docstring: str) -> None:
    for line in filter(None, (line.strip() for line in docstring.splitlines())):
        assert workspace.expand(line) in invocation.output, f"{line!r} not printed\n{invocation.explain()}"


@then("it succeeds, printing these lines")
def succeeds_printing(invocation: Invocation, workspace: Workspace, docstring: str):
    """The command exited 0, and each line of the docstring (<data_dir> expanded) appears in its output."""
    assert invocation.returncode == 0, invocation.explain()
    printed(invocation, workspace, docstring)


@then("it fails, printing these lines")
def fails_printing(invocation: Invocation, workspace: Workspace, docstring: str):
    """The command exited non-zero, and each line of the docstring appears in its output."""
    assert invocation.returncode != 0, invocation.explain()
    printed(invocation, workspace, docstring)


@then("the output mentions these lines")
def output_mentions_lines(invocation: Invocation, workspace: Workspace, docstring: str):
    """Each line of the docstring (<data_dir> expanded) appears in the command's output."""
    printed(invocation, workspace, docstring)


@then(parsers.parse('the output mentions "{text}"'))
def output_mentions(invocation: Invocation, workspace: Workspace, text: str):
    """``text`` (<data_dir> expanded) appears in the command's output."""
    assert workspace.expand(text) in invocation.output, invocation.explain()


@then(parsers.parse('the output does not mention "{text}"'))
def output_lacks(invocation: Invocation, workspace: Workspace, text: str):
    """``text`` appears nowhere in the command's output."""
    assert workspace.expand(text) not in invocation.output, invocation.explain()


@then("no MLflow database was created")
def no_database(workspace: Workspace):
    """The command failed before opening any MLflow backend: no SQLite file in the data directory."""
    assert not (workspace.data_dir / "mlflow.db").exists()


@dataclass
class Server:
    """A server process of a scenario (started in its own session, so stopping it stops its children)."""

    base: str
    proc: subprocess.Popen
    log: Path
    first_health: httpx.Response | None = None
    env: dict = field(default_factory=dict)

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.base + path, timeout=120, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.base + path, timeout=120, **kw)

    def stop(self) -> None:
        processes.stop(self.proc, grace_s=30)


def launch(
    command,
    env: dict[str, str],
    log: Path,
    timeout_s: float,
    cwd: Path = ROOT,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> Server:
    """Start ``command(port)`` on a free port (or on ``port``), listening on ``host``; return once its /health
    answers 200 (the first answer, 503 while loading perhaps, is kept)."""
    port = port or free_port()
    base, first = f"http://{host}:{port}", []

    def healthy() -> bool:
        try:
            response = httpx.get(f"{base}/health", timeout=120)
        except httpx.TransportError:
            return False
        if not first:
            first.append(response)
        return response.status_code == 200  # readiness is the 200 itself (503 while the model loads)

    try:
        proc = processes.start(command(port), env, healthy, log, timeout_s, cwd=cwd)
    except processes.NotReady as exc:
        raise AssertionError(str(exc)) from None
    return Server(base, proc, log, first_health=first[0])


TRACKING_READY_S = 120


def start_tracking(
    workspace: Workspace, log: Path, port: int | None = None, host: str = "127.0.0.1", env: dict | None = None
) -> Server:
    """The lean tracking server on the workspace's database, as `mode=server-config serve.run=true` starts it."""

    def argv(p: int) -> list[str]:
        return workspace.argv(
            f"python main.py mode=server-config serve.run=true serve.host={host} serve.tracking_port={p}"
        )

    return launch(argv, workspace.env(env or {}), log, TRACKING_READY_S, port=port, host=host)


REGISTERED_MODEL_URI = "models:/langchain-e2e-model@champion"
SERVING_READY_TIMEOUT_S = 180
# 8 answers to have in flight when a server is stopped: a few seconds in one batch, two questions (each answered
# alone first, to compare)
DRAINED = [{"question": q, "max_new_tokens": 48} for q in ("What is Python?", "What is MLflow?")] * 4


def serving_command(model_uri: str = REGISTERED_MODEL_URI):
    """``python -m serving`` for ``model_uri``, as ``launch`` takes a command: port -> argv."""

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "serving", "--model-uri", model_uri, "--port", str(port)]

    return argv


def start_server(workspace: Workspace, extra_env: dict[str, str], log: Path, command=None) -> Server:
    """Start ``command(port)`` (default: ``python -m serving`` for the registered model) on a free port, tracking the
    workspace's backend, and wait until /health answers 200."""
    env = workspace.env({"MLFLOW_TRACKING_URI": workspace.tracking_uri, **extra_env})
    server = launch(command or serving_command(), env, log, SERVING_READY_TIMEOUT_S)
    server.env = extra_env
    return server


@then("the server answers a question on /ask")
def answers_on_ask(server: Server):
    """A short question to the scenario's server gets 200 and a non-empty answer."""
    response = server.post("/ask", json={"question": "What is MLflow?", "max_new_tokens": 8})
    assert response.status_code == 200, response.text
    assert response.json()["answer"].strip(), response.json()


TRACE_WAIT_S = 60  # a server's export is batched (about once a second) and off the request path: a trace lands later


def read_trace(workspace: Workspace, trace_id: str, complete: bool = True):
    """The trace once MLflow has it in the workspace's database (a served answer's trace is exported in batches,
    off the request path: poll until it lands, complete unless ``complete`` is false)."""
    import mlflow

    workspace.client()  # the workspace's database as the process-wide tracking URI
    deadline = time.monotonic() + TRACE_WAIT_S
    while True:
        try:
            trace = mlflow.get_trace(trace_id)
        except Exception:
            trace = None
        if trace is not None and (not complete or trace.info.state.value == "OK" or trace.info.state.value == "ERROR"):
            return trace
        assert time.monotonic() < deadline, f"trace {trace_id} not in MLflow after {TRACE_WAIT_S} s"
        time.sleep(0.5)  # polling interval: the exporter sends a batch about once a second


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- sweeps: what a sweep's run holds (features/sweep.feature, features/team.feature) ---


def template_without_question(folder: Path, name: str) -> Path:
    """A config folder (for hydra.searchpath) with a prompt template that forgot {{question}}."""
    (folder / "prompt").mkdir(parents=True)
    (folder / "prompt" / f"{name}.yaml").write_text(
        f"name: qa-{name}\ndescription: A template that forgot the question.\ntemplate: Answer briefly.\n"
    )
    return folder


def sweep_run(workspace: Workspace):
    (run,) = workspace.runs("tags.`lifecycle.mode` = 'sweep'")
    return run


def summary_table(workspace: Workspace) -> list[dict]:
    import mlflow

    run = sweep_run(workspace)
    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/sweep/summary.json")
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


@then(
    parsers.parse(
        'the summary marks job "{label}" failed with "{message}", and the other {count:d} completed with their scores'
    )
)
def failed_job(workspace: Workspace, label, message, count):
    """The sweep's summary table: the job labelled ``label`` failed with ``message``; the others completed."""
    (row,) = [row for row in summary_table(workspace) if row["label"] == label]
    assert row["status"] == "failed" and message in row["error"], row
    others_completed(workspace, count)


def others_completed(workspace: Workspace, count: int) -> None:
    done = [row for row in summary_table(workspace) if row["status"] == "completed"]
    assert len(done) == count and all(row["fact_agreement/mean"] is not None for row in done), done


# --- the API contract (features/contract.feature, and the exported container in features/export.feature) ---

# Small limits, so that a run is quick and often reaches the token limit: a question of 100 characters can be more than
# the 64 tokens a prompt may have (the chat template alone is 30), and such a request gets a documented 400.
LIMITS = {
    "SERVING_MAX_QUESTION_CHARS": "100",
    "SERVING_MAX_INPUT_TOKENS": "64",
    "SERVING_MAX_NEW_TOKENS_CAP": "2",
    "SERVING_MAX_BATCH_QUESTIONS": "4",
    "SERVING_MAX_CHAT_MESSAGES": "2",
}
CONTRACT_SEED = "2"  # the same requests every run; LIFECYCLE_CONTRACT_SEED tries others
CONTRACT_CONFIG = ROOT / "features" / "schemathesis.toml"  # 400 is a documented answer to a valid request...
CONTRACT_CHECKS = ROOT / "features" / "contract_checks.py"  # ...for the reasons the document states, checked here


def schemathesis(
    base: str, cwd: Path, headers: dict[str, str] | None = None, examples: int = 5
) -> subprocess.CompletedProcess:
    """schemathesis (pinned in the dev extras) with every check, ours included, against ``base``'s live
    /openapi.json: ``examples`` requests per operation in each phase that generates them."""
    seed = os.environ.get("LIFECYCLE_CONTRACT_SEED", CONTRACT_SEED)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONTRACT_CONFIG),
        "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", str(examples), "--seed", seed,
        "--request-timeout", "60",
        "--max-response-time", "120",  # a contract, not a speed test (benchmarks/soak.py measures that)
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(CONTRACT_CHECKS)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def assert_no_difference(run: subprocess.CompletedProcess) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "No issues found" in output, output[-6000:]


@contextlib.contextmanager
def ray_cluster(folder: Path, cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """A local Ray cluster on loopback (devservices.cluster), ``env`` in its environment: its address. One at a
    time on the machine."""
    from devservices.cluster import local_cluster

    try:
        with local_cluster(folder, cpus, env=env) as address:
            yield address
    except processes.NotReady as exc:
        raise AssertionError(str(exc)) from None
