"""Steps of replicas.feature: the champion served by replicas on a real local Ray cluster (features/conftest.py,
ray_cluster), the model loaded through a real tracking server on a copy of the registered workspace (the rollout
registers a version there), under the load of real HTTP clients."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from devservices.ports import free_port
from serving.replicas import PUBLISH_S

from .conftest import EXPERIMENT, Invocation, Server, Workspace, ray_cluster, read_trace, start_tracking

scenarios("replicas.feature")

MODEL = "langchain-e2e-model"
APP = "lifecycle"
# small limits: a replica holds 8 rows and 8 queued, and 16 more wait at the proxy, so that 16 clients fit in one
# replica (as during a rollout) and 64 do not fit in two
LIMITS = {"SERVING_MAX_BATCH_SIZE": "8", "SERVING_MAX_QUEUE": "8", "TOKENIZERS_PARALLELISM": "false"}
RECOVERY_S = 240  # for Ray Serve to notice the killed replica and start another (its model loads in about 20 s)
TOKENS = 12
# the key is in the environment of `ray start` alone, not of the deploying process: each replica reads its own node's
KEY = "replicas-feature-key"
KEYED = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Fleet:
    """The deployed application: where it answers, the cluster it runs on, and how to deploy it again."""

    base: str
    address: str
    workspace: Workspace
    tracking: Server
    command: str
    deployed: Invocation
    references: dict[str, str] = field(default_factory=dict)  # question -> the answer it gets alone
    broken: subprocess.CompletedProcess | None = None  # a deploy that had to fail

    def deploy(self) -> Invocation:
        return self.workspace.run(self.command, env=LIMITS, timeout=600)

    def openai(self):
        """The openai client, keyed, on the application's /v1."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base}/v1", api_key=KEY, timeout=120, max_retries=0)

    def ask(self, question: str, client: httpx.Client | None = None) -> httpx.Response:
        body = {"question": question, "max_new_tokens": TOKENS, "temperature": 0.0}
        return (client or httpx).post(f"{self.base}/ask", json=body, headers=KEYED, timeout=300)


@pytest.fixture(scope="module")
def fleet_factory(registered_workspace, tmp_path_factory):
    """Deploys on first use, with the scenario's overrides; one application for the module (in file order)."""
    made: dict[str, Fleet] = {}
    with ExitStack() as stack:

        def make(overrides: str) -> Fleet:
            if overrides in made:
                return made[overrides]
            assert not made, "one application a module"
            folder = tmp_path_factory.mktemp("replicas")
            data = shutil.copytree(registered_workspace.data_dir, folder / "data")
            workspace = Workspace(data, registered_workspace.model_cache)
            tracking = start_tracking(workspace, folder / "mlflow-server.log")
            stack.callback(tracking.stop)
            address = stack.enter_context(ray_cluster(folder, env={"SERVING_API_KEY": KEY}))
            port = free_port()
            command = (
                f"python main.py mode=serve serve.backend=ray serve.ray.address={address} serve.port={port} "
                f"tracking_uri={tracking.base} {overrides}"
            )
            fleet = Fleet(
                f"http://127.0.0.1:{port}", address, workspace, tracking, command, Invocation("", 0, "", "", 0)
            )
            fleet.deployed = fleet.deploy()
            assert fleet.deployed.returncode == 0, fleet.deployed.explain()
            made[overrides] = fleet
            return fleet

        yield make


@given(parsers.parse('the champion deployed on a Ray cluster on loopback with "{overrides}"'), target_fixture="fleet")
def deployed(fleet_factory, overrides) -> Fleet:
    return fleet_factory(overrides)


def replicas(fleet: Fleet) -> dict[str, int]:
    """Ray Serve's count of the deployment's replicas by state, asked from a process of its own."""
    script = (
        "import json, ray\nfrom ray import serve\n"
        f"ray.init(address={fleet.address!r}, logging_level='error', log_to_driver=False)\n"
        f"app = serve.status().applications[{APP!r}]\n"
        "print(json.dumps({str(k).split('.')[-1]: v for k, v in app.deployments['server'].replica_states.items()}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def until_running(fleet: Fleet, count: int) -> dict[str, int]:
    """The replicas by state, once ``count`` of them run (or RECOVERY_S has passed)."""
    deadline = time.monotonic() + RECOVERY_S
    while (states := replicas(fleet)) != {"RUNNING": count} and time.monotonic() < deadline:
        time.sleep(2)  # polling Ray Serve's status
    return states


@then(parsers.parse("{count:d} replicas of version {version} are running"))
def running(fleet: Fleet, count, version):
    states = until_running(fleet, count)
    assert states == {"RUNNING": count}, states
    served = {fleet_get(fleet, "/model/info").json()["version"] for _ in range(12)}
    assert served == {version}, served


def fleet_get(fleet: Fleet, path: str) -> httpx.Response:
    response = httpx.get(fleet.base + path, headers=KEYED, timeout=60)
    assert response.status_code == 200, response.text
    return response


@then(
    "the application answers the openai client, /ask and /invocations with the key set where the cluster started, "
    "401 without it"
)
def answers_everywhere(fleet: Fleet):
    client = fleet.openai()
    chat = client.chat.completions.create(
        model=f"{MODEL}:1", messages=[{"role": "user", "content": "What is MLflow?"}], max_tokens=TOKENS
    )
    assert chat.choices[0].message.content.strip() and chat.usage.completion_tokens > 0
    asked = fleet.ask("What is MLflow?")
    assert asked.status_code == 200 and asked.json()["answer"].strip(), asked.text
    assert asked.json()["model_version"] == "1"
    inputs = {"inputs": ["What is MLflow?", "What is Ray?"]}
    scored = httpx.post(f"{fleet.base}/invocations", json=inputs, headers=KEYED, timeout=300)
    assert scored.status_code == 200, scored.text
    assert len(scored.json()["predictions"]) == 2
    assert fleet_get(fleet, "/health").json()["ready"] is True
    assert "/v1/chat/completions" in fleet_get(fleet, "/openapi.json").json()["paths"]
    keyless = httpx.post(f"{fleet.base}/ask", json={"question": "What is MLflow?"}, timeout=60)
    assert keyless.status_code == 401 and "API key" in keyless.json()["detail"][0]["msg"], keyless.text


@then("an answer of the replicas is a trace in the experiment of the serve run")
def traced(fleet: Fleet):
    asked = fleet.ask("What is a trace?")
    assert asked.status_code == 200, asked.text
    trace = read_trace(fleet.workspace, asked.headers["x-trace-id"])
    experiment = fleet.workspace.client().get_experiment_by_name(EXPERIMENT).experiment_id
    assert trace.info.experiment_id == experiment
    assert trace.info.state.value == "OK"


def tokens_by_replica(fleet: Fleet) -> dict[str, int]:
    """serving_tokens_generated_total of each replica, from one GET /metrics through the proxy."""
    sample = re.compile(r'^serving_tokens_generated_total\{replica="([^"]+)"\} (\d+)$', re.MULTILINE)
    return {replica: int(count) for replica, count in sample.findall(fleet_get(fleet, "/metrics").text)}


def settled_tokens(fleet: Fleet, since: dict[str, int] | None = None, total: int = 0) -> dict[str, int]:
    """The replicas' token counts once /metrics says the same twice, a publishing period apart (and, with ``since``,
    has grown by at least ``total``), or after 10 periods: each replica publishes every PUBLISH_S."""
    deadline, seen = time.monotonic() + 10 * PUBLISH_S, tokens_by_replica(fleet)
    while time.monotonic() < deadline:
        time.sleep(PUBLISH_S + 0.5)  # polling the replicas' next publishing
        now = tokens_by_replica(fleet)
        grown = since is None or sum(now.values()) - sum(since.values()) >= total
        if now == seen and grown:
            break
        seen = now
    return seen


@then("/metrics holds the series of both replicas, and their tokens add up to what the openai client was answered")
def fleet_metrics(fleet: Fleet):
    before = settled_tokens(fleet)
    assert len(before) == 2, before
    client = fleet.openai()
    answered = 0
    for question in ("What is MLflow?", "What is Ray?", "What is Hydra?", "What is a replica?"):
        messages = [{"role": "user", "content": question}]
        chat = client.chat.completions.create(model=f"{MODEL}:1", messages=messages, max_tokens=TOKENS)
        answered += chat.usage.completion_tokens
    after = settled_tokens(fleet, before, answered)
    assert set(after) == set(before), (before, after)
    assert sum(after.values()) - sum(before.values()) == answered, (before, after, answered)
    text = fleet_get(fleet, "/metrics").text
    assert text.count("# TYPE serving_tokens_generated_total counter") == 1  # one family, a sample per replica


@dataclass
class Outcome:
    question: str
    status: int | None  # None: the connection broke
    body: str
    retry_after: str | None = None


@contextmanager
def load(fleet: Fleet, clients: int) -> Iterator[list[Outcome]]:
    """``clients`` threads asking their own question in a loop until the block ends; what each request got."""
    outcomes: list[Outcome] = []
    stop = threading.Event()
    questions = [f"In one sentence, what is step {i} of a model's lifecycle?" for i in range(clients)]
    for question in questions:  # each question's answer, asked alone (greedy: a batch must not change it)
        if question not in fleet.references:
            fleet.references[question] = answer_of(fleet.ask(question))

    def client(question: str) -> None:
        with httpx.Client(timeout=300) as http:
            while not stop.is_set():
                try:
                    r = fleet.ask(question, http)
                    outcomes.append(Outcome(question, r.status_code, r.text, r.headers.get("retry-after")))
                except httpx.TransportError as exc:
                    outcomes.append(Outcome(question, None, repr(exc)))

    threads = [threading.Thread(target=client, args=(q,), daemon=True) for q in questions]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=600)


def answer_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["answer"]


def wrong_answers(fleet: Fleet, outcomes: list[Outcome]) -> list[str]:
    return [
        f"{o.question!r}: {json.loads(o.body)['answer']!r} (alone: {fleet.references[o.question]!r})"
        for o in outcomes
        if o.status == 200 and json.loads(o.body)["answer"] != fleet.references[o.question]
    ]


ROUNDS = 3  # at most, each client asks again at once until one of them has been answered 429


@when(parsers.parse("{clients:d} clients ask at once"), target_fixture="outcomes")
def ask_at_once(fleet: Fleet, clients) -> list[Outcome]:
    """Each client opens its connection first (a client made per request costs milliseconds of CPU each, enough on
    a busy machine to spread 64 arrivals over the time the first answers take), then all ask together, and ask
    again as soon as they are answered: more requests than the fleet holds stay in flight until one is refused."""
    barrier = threading.Barrier(clients)
    refused = threading.Event()
    outcomes: list[Outcome] = []

    def one(i: int) -> None:
        with httpx.Client(timeout=300) as http:
            try:
                http.get(f"{fleet.base}/health").raise_for_status()  # the connection is open before the barrier
            finally:
                barrier.wait(timeout=120)
            for _ in range(ROUNDS):
                try:
                    r = fleet.ask(f"Name one thing {i} people might log in MLflow.", http)
                except httpx.TransportError as exc:
                    outcomes.append(Outcome("", None, repr(exc)))
                    return
                outcomes.append(Outcome("", r.status_code, r.text, r.headers.get("retry-after")))
                if r.status_code == 429:
                    refused.set()
                if refused.is_set():
                    return

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return outcomes


@then("some get 429 with Retry-After, the others their answer, and none a 5xx")
def some_busy(outcomes: list[Outcome]):
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 429} and statuses[429] > 0 and statuses[200] > 0, statuses
    assert all(o.retry_after for o in outcomes if o.status == 429)
    assert all("backpressure" in o.body or "busy" in o.body for o in outcomes if o.status == 429)


@when(
    parsers.parse("version 2 becomes the champion and is deployed again while {clients:d} clients ask"),
    target_fixture="outcomes",
)
def roll_out(fleet: Fleet, clients) -> list[Outcome]:
    import mlflow

    client = fleet.workspace.client()
    mlflow.set_tracking_uri(fleet.tracking.base)
    mlflow.set_registry_uri(fleet.tracking.base)
    first = client.get_model_version(MODEL, "1")
    version = mlflow.register_model(first.source, MODEL).version
    assert str(version) == "2"
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    with load(fleet, clients) as outcomes:
        rolled = fleet.deploy()
        assert rolled.returncode == 0, rolled.explain()
        assert "(version 2)" in rolled.output, rolled.explain()
        settle(outcomes, 8)
    return outcomes


def settle(outcomes: list[Outcome], more: int) -> None:
    """Until ``more`` requests have come back after this point (the load goes on across what just happened)."""
    seen, deadline = len(outcomes), time.monotonic() + 120
    while len(outcomes) < seen + more and time.monotonic() < deadline:
        time.sleep(0.2)


@then("every request was answered right")
def all_right(fleet: Fleet, outcomes: list[Outcome]):
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) == {200}, (statuses, [o.body for o in outcomes if o.status != 200][:3])
    assert len(outcomes) >= 16
    assert not wrong_answers(fleet, outcomes)


@when(
    parsers.parse("one replica's process is killed with SIGKILL while {clients:d} clients ask"),
    target_fixture="outcomes",
)
def kill_one(fleet: Fleet, clients) -> list[Outcome]:
    with load(fleet, clients) as outcomes:
        settle(outcomes, clients)  # every client has had an answer: the load is spread over both replicas
        found = subprocess.run(["pgrep", "-f", f"ServeReplica:{APP}:server"], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        assert len(pids) == 2, found
        os.kill(pids[0], signal.SIGKILL)
        until_running(fleet, 2)
        settle(outcomes, 2 * clients)  # and the application answers again
    return outcomes


@then(
    parsers.parse(
        "at most {count:d} requests failed, each with a 5xx or a broken connection, and every answer was right"
    )
)
def few_failed(fleet: Fleet, outcomes: list[Outcome], count):
    failed = [o for o in outcomes if o.status != 200]
    assert len(failed) <= count, Counter(o.status for o in failed)
    odd = [(o.status, o.body[:300]) for o in failed if o.status is not None and o.status < 500]
    assert not odd, (Counter(o.status for o in failed), odd)
    assert not wrong_answers(fleet, outcomes)
    last = outcomes[-16:]
    assert all(o.status == 200 for o in last), Counter(o.status for o in last)


@when(
    parsers.parse("a model folder that does not exist is deployed under the same name while {clients:d} clients ask"),
    target_fixture="outcomes",
)
def deploy_broken(fleet: Fleet, clients, tmp_path) -> list[Outcome]:
    argv = [sys.executable, "-m", "serving", "--backend", "ray", "--ray-address", fleet.address]
    argv += [
        "--app-name",
        APP,
        "--model-uri",
        str(tmp_path / "missing"),
        "--replicas",
        "2",
        "--cpus-per-replica",
        "0.5",
    ]
    with load(fleet, clients) as outcomes:
        fleet.broken = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=fleet.workspace.env({}))
        settle(outcomes, clients)
    return outcomes


@then("the deploy fails, saying that the model folder does not exist")
def deploy_failed(fleet: Fleet):
    assert fleet.broken.returncode == 1, fleet.broken
    assert "missing does not exist" in fleet.broken.stderr, fleet.broken.stderr[-3000:]
