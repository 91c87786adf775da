"""Steps of features/traces.feature: a real `mlflow server` (what `mode=server-config serve.run=true` starts) on the
registered model's SQLite database, `python -m serving` exporting its traces there, and the traces read back with
MLflow's client from the same database."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time

import httpx
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from .conftest import (
    EXPERIMENT,
    TRACE_WAIT_S,
    Invocation,
    Server,
    Workspace,
    evaluation_datasets,
    read_trace,
    start_server,
    start_tracking,
)

scenarios("traces.feature")

API_KEY = "k-traces-feature-4711"
ASKED = {  # what each route is asked, so that every question and answer can be looked for in the traces
    "chat": "What is the capital of France?",
    "stream": "What is Python?",
    "ask": "Who wrote Romeo and Juliet?",
    "invocations": "How many days are there in a week?",
}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def shared_tracking(registered_workspace, tmp_path_factory):
    server = start_tracking(registered_workspace, tmp_path_factory.mktemp("tracking") / "mlflow-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def servers():
    running: dict[tuple, Server] = {}
    yield running
    for server in running.values():
        server.stop()


@given("a tracking server on its database", target_fixture="tracking")
def tracking_server(shared_tracking) -> Server:
    return shared_tracking


@given("a tracking server of this scenario on its database", target_fixture="own_tracking")
def own_tracking_server(workspace, tmp_path):
    server = start_tracking(workspace, tmp_path / "mlflow-server.log")
    yield server
    server.stop()


def traced_server(workspace, servers, tmp_path_factory, tracking: Server, settings: dict[str, str]) -> Server:
    key = (tracking.base, *sorted(settings.items()))
    if key not in servers:
        log = tmp_path_factory.mktemp("server") / "server.log"
        servers[key] = start_server(workspace, {"SERVING_TRACES_URL": tracking.base, **settings}, log)
    return servers[key]


@given(
    '"python -m serving" for the champion, its traces sent to the tracking server, behind an API key',
    target_fixture="server",
)
def server_with_key(workspace, servers, tmp_path_factory, tracking):
    return traced_server(workspace, servers, tmp_path_factory, tracking, {"SERVING_API_KEY": API_KEY})


@given(
    parsers.parse('"python -m serving" for the champion, its traces sent to the tracking server, with "{settings}"'),
    target_fixture="server",
)
def server_with(workspace, servers, tmp_path_factory, tracking, settings):
    env = dict(item.split("=", 1) for item in settings.split())
    return traced_server(workspace, servers, tmp_path_factory, tracking, env)


@given(
    '"python -m serving" for the champion, its traces sent to this scenario\'s tracking server',
    target_fixture="server",
)
def server_for_own_tracking(workspace, tmp_path, own_tracking):
    server = start_server(workspace, {"SERVING_TRACES_URL": own_tracking.base}, tmp_path / "server.log")
    yield server
    server.stop()


def headers(server: Server) -> dict[str, str]:
    key = server.env.get("SERVING_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@when("the OpenAI client asks and streams, and /ask and /invocations are asked", target_fixture="answers")
def ask_everywhere(server: Server) -> dict[str, dict]:
    """Each route once; per route, the answer's trace id (X-Trace-Id), its text and its completion tokens."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.base}/v1", api_key=server.env.get("SERVING_API_KEY", "none"))
    messages = [{"role": "user", "content": ASKED["chat"]}]
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages, max_tokens=8)
    completion = raw.parse()
    answers = {
        "chat": {
            "trace_id": raw.headers["x-trace-id"],
            "text": completion.choices[0].message.content,
            "tokens": completion.usage.completion_tokens,
        }
    }
    stream_messages = [{"role": "user", "content": ASKED["stream"]}]
    with client.chat.completions.with_streaming_response.create(
        model="m", messages=stream_messages, max_tokens=8, stream=True
    ) as streamed:
        pieces = [c.choices[0].delta.content or "" for c in streamed.parse() if c.choices]
        answers["stream"] = {"trace_id": streamed.headers["x-trace-id"], "text": "".join(pieces).strip()}
    ask = server.post("/ask", json={"question": ASKED["ask"], "max_new_tokens": 8}, headers=headers(server))
    assert ask.status_code == 200, ask.text
    body = ask.json()
    answers["ask"] = {"trace_id": ask.headers["x-trace-id"], "text": body["answer"], "tokens": body["tokens"]}
    answers["ask"]["body_trace_id"] = body["trace_id"]
    invocation = server.post(
        "/invocations",
        json={"inputs": [ASKED["invocations"]], "params": {"max_new_tokens": 8}},
        headers=headers(server),
    )
    assert invocation.status_code == 200, invocation.text
    answers["invocations"] = {
        "trace_id": invocation.headers["x-trace-id"],
        "text": invocation.json()["predictions"][0],
    }
    return answers


def root(trace):
    return min(trace.data.spans, key=lambda span: span.start_time_ns)


@then(
    parsers.parse(
        "each of the {count:d} answers is a trace in the model's experiment with its question and answer, version "
        "{version} as {alias}, and its token counts"
    )
)
def answers_traced(workspace: Workspace, answers: dict, count, version, alias):
    experiment = workspace.client().get_experiment_by_name(EXPERIMENT).experiment_id
    assert len(answers) == count
    for route, answer in answers.items():
        trace = read_trace(workspace, answer["trace_id"])
        span = root(trace)
        assert trace.info.experiment_id == experiment, route
        assert ASKED[route] in json.dumps(span.inputs), (route, span.inputs)
        assert answer["text"] and answer["text"] in json.dumps(span.outputs), (route, span.outputs, answer)
        tags = trace.info.tags
        assert tags["lifecycle.model.name"] == "langchain-e2e-model", tags
        assert (tags["lifecycle.model.version"], tags["lifecycle.model.alias"]) == (version, alias), tags
        usage = trace.info.token_usage
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, (route, usage)
        if "tokens" in answer:
            assert usage["output_tokens"] == answer["tokens"], (route, usage, answer)
        assert span.attributes["lifecycle.time_to_first_token_s"] > 0, span.attributes


@then("the /ask answer names its trace in its body and its X-Trace-Id header, and the API key is in no trace")
def trace_named_without_key(workspace: Workspace, answers: dict):
    assert answers["ask"]["body_trace_id"] == answers["ask"]["trace_id"]
    for answer in answers.values():
        assert API_KEY not in json.dumps(read_trace(workspace, answer["trace_id"]).to_dict())


@when("/ask is asked with a traceparent, and with a question of only spaces", target_fixture="asked")
def ask_with_traceparent(server: Server) -> dict[str, httpx.Response]:
    traceparent = {"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-01", **headers(server)}
    joined = server.post("/ask", json={"question": ASKED["ask"], "max_new_tokens": 4}, headers=traceparent)
    refused = server.post("/ask", json={"question": "   "}, headers=headers(server))
    assert (joined.status_code, refused.status_code) == (200, 422), (joined.text, refused.text)
    return {"joined": joined, "refused": refused}


@then(
    parsers.parse(
        "the first answer's trace is the caller's trace, and the refused one is an error trace saying \"{reason}\""
    )
)
def joined_and_refused(workspace: Workspace, asked: dict, reason):
    joined = asked["joined"].headers["x-trace-id"]
    assert joined == f"tr-{CALLER_TRACE}" == asked["joined"].json()["trace_id"]
    assert root(read_trace(workspace, joined, complete=False)).parent_id  # under the caller's span
    refused = read_trace(workspace, asked["refused"].headers["x-trace-id"])
    span = root(refused)
    assert refused.info.state.value == "ERROR" and reason in span.status.description, span.status
    assert refused.info.tags["lifecycle.http_status"] == "422"


@then(
    parsers.parse("the {count:d} traces hold the token counts and version {version}, and no question, message or "
                  "answer text")
)  # fmt: skip
def no_content(workspace: Workspace, answers: dict, count, version):
    assert len(answers) == count
    for route, answer in answers.items():
        trace = read_trace(workspace, answer["trace_id"])
        dumped = json.dumps(trace.to_dict(), ensure_ascii=False)
        assert ASKED[route] not in dumped and answer["text"] not in dumped, (route, dumped[:2000])
        assert trace.info.token_usage["output_tokens"] > 0 and trace.info.tags["lifecycle.model.version"] == version


@when(parsers.parse("the tracking server is killed while {count:d} clients ask"), target_fixture="under_load")
def kill_tracking_under_load(server: Server, own_tracking: Server, count):
    start = threading.Barrier(count + 1)

    def ask(_):
        start.wait()
        return server.post("/ask", json={"question": "What is MLflow?", "max_new_tokens": 16})

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(ask, i) for i in range(count)]
        start.wait()  # every client is sending now: kill the tracking server under them
        os.killpg(own_tracking.proc.pid, signal.SIGKILL)
        own_tracking.proc.wait(timeout=30)
        return [f.result() for f in futures]


def trace_counts(server: Server) -> dict[str, float]:
    text = server.get("/metrics").text
    return {
        line.split('outcome="')[1].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("serving_trace_spans_total")
    }


@then("every client got 200, the server is healthy, and /metrics counts the spans it could not export")
def load_survived(server: Server, under_load: list):
    assert [r.status_code for r in under_load] == [200] * len(under_load), [r.text for r in under_load]
    assert server.get("/health").status_code == 200
    deadline = time.monotonic() + TRACE_WAIT_S
    while (counts := trace_counts(server))["failed"] + counts["dropped"] < len(under_load):
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)  # polling interval: each failed batch is counted once the exporter gives up on it
    assert server.post("/ask", json={"question": "What is MLflow?", "max_new_tokens": 4}).status_code == 200


@when(
    '/ask is asked, and its user sends feedback "no" with a rationale and a corrected answer',
    target_fixture="feedback",
)
def give_feedback(server: Server) -> dict:
    answer = server.post("/ask", json={"question": ASKED["ask"], "max_new_tokens": 8}, headers=headers(server))
    assert answer.status_code == 200, answer.text
    body = {
        "trace_id": answer.json()["trace_id"],
        "value": False,
        "rationale": "it names the wrong author",
        "corrected_answer": "William Shakespeare wrote Romeo and Juliet.",
        "source": "alice",
    }
    recorded = server.post("/v1/feedback", json=body, headers=headers(server))  # at once: before its trace landed
    assert recorded.status_code == 201, recorded.text
    return {**body, "recorded": recorded.json()}


@then(
    "the answer's trace holds that user's feedback false with its rationale, and the corrected answer as "
    "expected_response"
)
def feedback_recorded(workspace: Workspace, feedback: dict):
    trace = read_trace(workspace, feedback["trace_id"])
    by_name = {a.name: a for a in trace.info.assessments}
    given = by_name["user_feedback"]
    assert given.feedback.value is False and given.rationale == feedback["rationale"], given
    assert (given.source.source_type, given.source.source_id) == ("HUMAN", "alice")
    assert by_name["expected_response"].expectation.value == feedback["corrected_answer"]
    assert feedback["recorded"]["assessment_ids"] == [given.assessment_id, by_name["expected_response"].assessment_id]


@then("feedback without the key gets 401, on an unknown trace 404 and with a malformed body 422, each with its reason")
def feedback_refused(server: Server, feedback: dict):
    body = {"trace_id": feedback["trace_id"], "value": True}
    assert server.post("/v1/feedback", json=body).status_code == 401
    unknown = server.post("/v1/feedback", json={**body, "trace_id": "tr-" + "0" * 32}, headers=headers(server))
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["type"] == "trace_not_found", unknown.text
    malformed = server.post("/v1/feedback", json={**body, "value": None}, headers=headers(server))
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"][:2] == ["body", "value"]


@then("feedback while the tracking server is down gets 503 with Retry-After and the reason")
def feedback_while_down(server: Server, under_load: list):
    body = {"trace_id": under_load[0].json()["trace_id"], "value": True}
    down = server.post("/v1/feedback", json=body)
    assert down.status_code == 503 and down.headers["Retry-After"], down.text
    assert down.json()["detail"][0]["type"] == "tracking_unavailable", down.text


MARGIN = 0.3  # production questions are not the evaluation set: a mean may fall this far below it
MONITORED = ["What is the capital of France?", "Who wrote Romeo and Juliet?", "What is photosynthesis?"]


def traffic_then_monitor(workspace: Workspace, server: Server, max_new_tokens: int, negative_first: bool) -> dict:
    """Ask MONITORED on /ask, wait until each answer's trace (and feedback) is in MLflow, then run mode=monitor
    over exactly this traffic (monitor.since: when it began)."""
    since = int(time.time() * 1000)
    trace_ids = []
    for question in MONITORED:
        answer = server.post(
            "/ask", json={"question": question, "max_new_tokens": max_new_tokens}, headers=headers(server)
        )
        assert answer.status_code == 200, answer.text
        trace_ids.append(answer.json()["trace_id"])
    if negative_first:
        body = {"trace_id": trace_ids[0], "value": False, "source": "bob"}
        assert server.post("/v1/feedback", json=body, headers=headers(server)).status_code == 201
    for trace_id in trace_ids:
        read_trace(workspace, trace_id)
    invocation = workspace.run(f"python main.py mode=monitor monitor.since={since} monitor.default_margin={MARGIN}")
    return {"invocation": invocation, "trace_ids": trace_ids}


@when(
    "3 questions are asked on /ask, the first gets negative feedback, and mode=monitor reads this traffic",
    target_fixture="monitored",
)
def monitor_traffic(workspace: Workspace, server: Server) -> dict:
    return traffic_then_monitor(workspace, server, 16, negative_first=True)


@when(
    "3 questions are asked on /ask with max_new_tokens 1, and mode=monitor reads this traffic",
    target_fixture="monitored",
)
def monitor_poor_traffic(workspace: Workspace, server: Server) -> dict:
    return traffic_then_monitor(workspace, server, 1, negative_first=False)


@pytest.fixture
def invocation(monitored):
    return monitored["invocation"]


@then(
    "the monitor run counted 3 traces with latency and time-to-first-token percentiles, tokens, a positive feedback "
    "share of 0 and answer_relevance against the champion's evaluation"
)
def monitor_metrics(workspace: Workspace, monitored: dict):
    metrics = workspace.stage_runs("monitor")[0].data.metrics
    assert (metrics["traces"], metrics["scored"], metrics["errors"]) == (3, 3, 0), metrics
    assert 0 < metrics["latency_p50_s"] <= metrics["latency_p95_s"], metrics
    assert 0 < metrics["time_to_first_token_p50_s"] <= metrics["time_to_first_token_p95_s"], metrics
    assert metrics["output_tokens"] > 0 and metrics["feedback"] == 1 and metrics["feedback_positive_share"] == 0
    assert 0 <= metrics["answer_relevance/mean"] <= 1 and "evaluation/answer_relevance" in metrics, metrics
    assert "answer_relevance" in monitored["invocation"].output


def monitor_assessments_named(workspace: Workspace, monitored: dict, name: str) -> tuple[str, list]:
    """The latest monitor run's id, and the one assessment called ``name`` on each monitored answer's trace."""
    run_id = workspace.stage_runs("monitor")[0].info.run_id
    found = []
    for trace_id in monitored["trace_ids"]:
        (assessment,) = [a for a in read_trace(workspace, trace_id).info.assessments if a.name == name]
        found.append(assessment)
    return run_id, found


@then("each of the 3 answers' traces holds the monitor's answer_relevance")
def monitor_assessments(workspace: Workspace, monitored: dict):
    run_id, scores = monitor_assessments_named(workspace, monitored, "answer_relevance")
    for scored in scores:
        assert scored.source.source_type == "CODE" and scored.metadata["run_id"] == run_id, scored
        assert 0 <= scored.feedback.value <= 1


@then("once the tracking server is back on its port, a new answer becomes a trace again")
def traces_resume(workspace: Workspace, server: Server, own_tracking: Server, tmp_path):
    port = int(own_tracking.base.rsplit(":", 1)[1])
    back = start_tracking(workspace, tmp_path / "mlflow-server-again.log", port=port)
    own_tracking.proc = back.proc  # stopped with the scenario's fixture
    answer = server.post("/ask", json={"question": "What is MLflow?", "max_new_tokens": 4})
    assert answer.status_code == 200, answer.text
    trace = read_trace(workspace, answer.headers["x-trace-id"])
    assert "What is MLflow?" in json.dumps(root(trace).inputs)


HARVEST = ["What is MLflow used for?", "Who painted the Mona Lisa?", "Which planet is the largest?"]
ANY_DROP = 1.0  # this scenario is about the harvest: questions off the evaluation set may score lower, let them
CORRECTED = "MLflow is an open-source platform that tracks, registers and serves machine learning models."


@given(
    "a model deployed and promoted to champion in a data directory of its own, on eval=quick",
    target_fixture="workspace",
)
def own_registered_workspace(tmp_path, model_cache) -> Workspace:
    """Version 1 as champion in a workspace no other scenario reads: this one grows its dataset and registers v2."""
    workspace = Workspace(tmp_path / "data", model_cache)
    for command in ("python main.py mode=deploy eval=quick", "python main.py mode=promote eval=quick"):
        invocation = workspace.run(command)
        assert invocation.returncode == 0, invocation.explain()
    return workspace


@when(
    '3 new questions are asked on /ask, the first gets feedback "no" with a corrected answer, and mode=monitor '
    "harvests this traffic, the served model judging",
    target_fixture="monitored",
)
def harvest_traffic(workspace: Workspace, server: Server) -> dict:
    since = int(time.time() * 1000)
    trace_ids = []
    for question in HARVEST:
        answer = server.post("/ask", json={"question": question, "max_new_tokens": 16})
        assert answer.status_code == 200, answer.text
        trace_ids.append(answer.json()["trace_id"])
    body = {"trace_id": trace_ids[0], "value": False, "source": "carol", "corrected_answer": CORRECTED}
    assert server.post("/v1/feedback", json=body).status_code == 201
    for trace_id in trace_ids:
        read_trace(workspace, trace_id)
    judged = (
        f"experiment.judge.model=langchain-e2e-model experiment.judge.base_url={server.base}/v1 "
        "experiment.judge.key_env=null"
    )
    invocation = workspace.run(
        f"python main.py mode=monitor eval=quick monitor.harvest=true monitor.since={since} "
        f"monitor.default_margin={ANY_DROP} {judged}"
    )
    return {"invocation": invocation, "trace_ids": trace_ids}


def harvested_records(workspace: Workspace) -> tuple[object, list[dict]]:
    (dataset,) = evaluation_datasets(workspace, "eval-quick")
    records = dataset.to_df().to_dict("records")
    return dataset, [r for r in records if r["source_type"] == "TRACE"]


@then(
    "eval-quick now holds the disliked question from its trace with the corrected answer as expected_response, and "
    "its version moved from 1 to 2"
)
def disliked_harvested(workspace: Workspace, monitored: dict):
    dataset, harvested = harvested_records(workspace)
    by_question = {r["inputs"]["question"]: r for r in harvested}
    disliked = by_question[HARVEST[0]]
    assert disliked["source_id"] == monitored["trace_ids"][0], disliked
    assert disliked["expectations"]["expected_response"] == CORRECTED, disliked
    assert "negative feedback" in disliked["tags"]["lifecycle.harvest_reason"], disliked
    assert dataset.tags["lifecycle.dataset_version"] == "2", dataset.tags
    monitor = workspace.stage_runs("monitor")[0]
    assert monitor.data.tags["lifecycle.monitor.harvested_into"] == "eval-quick@2", monitor.data.tags


@then("every harvested question is one of the 3, from its own trace, and the monitor run says how many")
def harvested_from_traffic(workspace: Workspace, monitored: dict):
    _, harvested = harvested_records(workspace)
    asked = dict(zip(HARVEST, monitored["trace_ids"], strict=True))
    assert {r["inputs"]["question"]: r["source_id"] for r in harvested}.items() <= asked.items(), harvested
    assert workspace.stage_runs("monitor")[0].data.metrics["harvested"] == len(harvested)
    assert f"{len(harvested)} question(s) added to eval-quick, version 1 -> 2" in monitored["invocation"].output


@then("each answer's trace holds the judge's relevance_to_query verdict with its rationale")
def judged_traces(workspace: Workspace, monitored: dict):
    run_id, verdicts = monitor_assessments_named(workspace, monitored, "relevance_to_query")
    for verdict in verdicts:
        assert verdict.metadata["run_id"] == run_id and verdict.feedback.value in (0.0, 1.0), verdict
        assert verdict.rationale, verdict


@when(
    'a new version is deployed and "python main.py mode=promote eval=quick" runs',
    target_fixture="invocation",
)
def deploy_and_promote(workspace: Workspace) -> Invocation:
    deployed = workspace.run("python main.py mode=deploy eval=quick")
    assert deployed.returncode == 0, deployed.explain()
    return workspace.run("python main.py mode=promote eval=quick")


@then("both versions answered the disliked question in the promote run, judged on eval-quick version 2")
def promote_answers_harvest(workspace: Workspace, tmp_path):
    import mlflow

    workspace.client()
    run = workspace.stage_runs("promote")[0]
    assert run.data.tags["lifecycle.dataset_version"] == "2", run.data.tags
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="promote", dst_path=tmp_path)
    table = json.loads((tmp_path / "promote" / "questions.json").read_text())
    rows = {row["question"]: row for row in (dict(zip(table["columns"], r, strict=True)) for r in table["data"])}
    disliked = rows[HARVEST[0]]
    assert (disliked["champion_version"], disliked["challenger_version"]) == ("1", "2"), disliked
    assert disliked["champion_answer"] and disliked["challenger_answer"], disliked
