from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import sys
import threading
import time
import uuid

import httpx
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from lifecycle import processes

from .conftest import DRAINED, Server, free_port, read_trace, start_server

scenarios("serving.feature")

ASK = {"question": "What is the capital of France?", "max_new_tokens": 24}
LONG = {"question": "Write the numbers from 1 to 300, separated by commas.", "max_new_tokens": 200}  # runs ~9 s


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    running: dict[str, Server] = {}
    yield running
    for server in running.values():
        server.stop()


def server_with(workspace, servers, tmp_path_factory, settings: str) -> Server:
    if settings not in servers:
        env = dict(item.split("=", 1) for item in settings.split())
        servers[settings] = start_server(workspace, env, tmp_path_factory.mktemp("server") / "server.log")
    return servers[settings]


@given("a server for the registered model", target_fixture="server")
def default_server(workspace, servers, tmp_path_factory):
    return server_with(workspace, servers, tmp_path_factory, "")


@given(parsers.parse('a server for the registered model with "{settings}"'), target_fixture="server")
def configured_server(workspace, servers, tmp_path_factory, settings):
    return server_with(workspace, servers, tmp_path_factory, settings)


@then(parsers.parse('its first health answer was 503 "{status}" and it became ready with 200'))
def readiness(server, status):
    first = server.first_health
    assert (first.status_code, first.json()["status"], first.json()["ready"]) == (503, status, False)
    assert server.get("/health").json() == {"status": "ok", "ready": True, "detail": None}


@when(parsers.parse('I POST to "{path}"'), target_fixture="response")
def post_json(server, path, docstring):
    return server.post(path, content=docstring.strip(), headers={"Content-Type": "application/json"})


@when(parsers.parse('I POST to "{path}" as "{content_type}"'), target_fixture="response")
def post_as(server, path, content_type, docstring):
    body = docstring.strip().replace("\\n", "\n")
    return server.post(path, content=body, headers={"Content-Type": content_type})


@then(parsers.parse("the response status is {status:d}"))
def status_is(response, status):
    assert response.status_code == status, response.text


@then(parsers.parse('the answer mentions "{text}"'))
def answer_mentions(response, text):
    assert text in response.json()["answer"], response.text


@then(parsers.parse('the response names model version "{version}"'))
def names_version(response, version):
    assert response.json()["model_version"] == version


@then(parsers.parse('answer 1 mentions "{first}" and answer 2 mentions "{second}"'))
def batch_order(response, first, second):
    answers = response.json()["answers"]
    assert first in answers[0]["answer"] and second in answers[1]["answer"], answers


@then("a text/csv body with a second column gets 400 saying what the columns may be")
def csv_refused(server):
    body = "question,notes\nWhat is Python?,first\n"
    refused = server.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400, refused.text
    (item,) = refused.json()["detail"]
    assert item["type"] == "invalid_body" and "columns: List should have at most 1 item" in item["msg"], item


@then("/ping answers 200 and /version the package's version")
def ping_and_version(server):
    import core

    ping, version = server.get("/ping"), server.get("/version")
    assert (ping.status_code, ping.text) == (200, "\n"), ping.text
    assert (version.status_code, version.text) == (200, core.__version__), version.text


@then(parsers.parse('there are {count:d} predictions and the first mentions "{fact}"'))
def predictions(response, count, fact):
    body = response.json()
    assert list(body) == ["predictions"] and len(body["predictions"]) == count
    assert fact in body["predictions"][0], body


@then(parsers.parse('the error mentions "{message}"'))
def error_mentions(response, message):
    assert message in response.text, response.text


@when(parsers.parse("{count:d} clients ask at once"), target_fixture="responses")
def clients_at_once(server, count):
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: server.post("/ask", json=ASK), range(count)))


@then("every client got 200")
def all_ok(responses):
    assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]


GREEDY_CHATS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "What is Python?",
    "How many days are there in a week?",
    "What is photosynthesis?",
    "Name a primary colour.",
]
POISONED = [  # valid by the schema; each once failed every answer decoding beside it
    ("/ask", {"question": "0", "temperature": 2.391627137278296e-268, "max_new_tokens": 24}),
    ("/ask", {"question": "What is MLflow?", "temperature": 1e-300, "max_new_tokens": 24}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "top_p": 5e-324, "temperature": 1}),
    ("/invocations", {"inputs": ["What is AI?"], "params": {"temperature": 2, "repetition_penalty": 0.5}}),
    ("/invocations", {"inputs": ["What is AI?"], "params": {"temperature": 2, "repetition_penalty": 2}}),
    (
        "/invocations",
        {"inputs": ["What is AI?"], "params": {"temperature": 1.5e-212, "top_p": 0.52, "repetition_penalty": 1.5}},
    ),
]


def greedy_chat(question: str) -> tuple[str, dict]:
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": question}], "max_tokens": 24}


def chat_answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


@when(
    parsers.parse(
        "{count:d} greedy chat clients ask at once beside requests with a temperature of 1e-300, a top_p of 5e-324, "
        "repetition penalties of 0.5 and 2, and the /invocations params that once failed them all"
    ),
    target_fixture="side_by_side",
)
def poisoned_neighbours(server, count):
    greedy = [greedy_chat(q) for q in GREEDY_CHATS[:count]]
    before = server.get("/model/info").json()["stats"]["batch_sizes"]
    requests = greedy + POISONED
    start = threading.Barrier(len(requests))

    def send(request):
        start.wait()  # every client sends at the same moment
        return server.post(request[0], json=request[1])

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(send, requests))
    after = server.get("/model/info").json()["stats"]["batch_sizes"]
    steps = {int(rows): n - before.get(rows, 0) for rows, n in after.items() if n > before.get(rows, 0)}
    return {"greedy": greedy, "responses": responses, "steps": steps}


@then("every request answered 200, decoded side by side")
def all_answered_side_by_side(side_by_side):
    responses = side_by_side["responses"]
    assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
    assert max(side_by_side["steps"]) >= len(GREEDY_CHATS), side_by_side["steps"]  # decoding steps they shared


@then("each greedy client got the answer it gets alone")
def same_as_alone(server, side_by_side):
    together = [chat_answer(r) for r in side_by_side["responses"][: len(side_by_side["greedy"])]]
    alone = [chat_answer(server.post(path, json=body)) for path, body in side_by_side["greedy"]]
    assert together == alone


@then("the model info shows a batch of more than 1 request")
def batched(server):
    stats = server.get("/model/info").json()["stats"]
    assert stats["max_batch_size_seen"] > 1, stats


@then("some clients got 429 with Retry-After and the others 200")
def overloaded(responses):
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert all(r.headers.get("Retry-After") for r in responses if r.status_code == 429)


@then(parsers.parse('the server still answers "{path}" with 200'))
def still_serving(server, path):
    assert server.post(path, json=ASK).status_code == 200


@then(parsers.parse('"{path}" answers 200 without a key'))
def open_path(server, path):
    assert server.get(path).status_code == 200


@then(parsers.parse('"{path}" answers 401 without a key and 200 with it'))
def key_needed(server, path):
    key = server.env["SERVING_API_KEY"]
    missing = server.post(path, json=ASK)
    assert missing.status_code == 401 and "API key" in missing.text
    assert server.post(path, json=ASK, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert server.post(path, json=ASK, headers={"X-API-Key": key}).status_code == 200
    assert key not in server.log.read_text()


@then(parsers.parse('/metrics counts {count:d} answered "{path}" requests and a batch size histogram'))
def prometheus_metrics(server, count, path):
    text = server.get("/metrics").text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(samples[f'serving_requests_total{{path="{path}",status="200"}}']) >= count
    assert int(samples["serving_batch_size_count"]) >= 1
    assert "serving_queue_depth" in samples and f'serving_request_duration_seconds_count{{path="{path}"}}' in samples


def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.base}/v1", api_key="unused", timeout=120, max_retries=0)


@when(parsers.parse('the OpenAI client asks "{question}"'), target_fixture="completion")
def openai_asks(server, question):
    return openai_client(server).chat.completions.create(
        model="langchain-e2e-model", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
    )


def cached_prompt_tokens(server) -> int:
    found = re.search(r"^serving_prompt_tokens_cached_total (\d+)$", server.get("/metrics").text, re.MULTILINE)
    return int(found.group(1))


@when(
    parsers.parse('the OpenAI client asks "{question}" twice, then goes on with "{follow_up}"'),
    target_fixture="conversation",
)
def openai_asks_twice_and_goes_on(server, question, follow_up):
    client, before = openai_client(server), cached_prompt_tokens(server)

    def ask(messages):
        return client.chat.completions.create(
            model="langchain-e2e-model", messages=messages, max_tokens=24, temperature=0
        )

    asked = [{"role": "user", "content": question}]
    first, again = ask(asked), ask(asked)
    answer = {"role": "assistant", "content": first.choices[0].message.content}
    turn = ask([*asked, answer, {"role": "user", "content": follow_up}])
    return {"first": first, "again": again, "turn": turn, "counted": cached_prompt_tokens(server) - before}


@then("the second answer is the first one, all of its prompt but the last token read from the prompt cache")
def asked_again(conversation):
    first, again = conversation["first"], conversation["again"]
    assert again.choices[0].message.content == first.choices[0].message.content, (first, again)
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1, again.usage


@then("the next turn read at least the whole first prompt from the cache, and /metrics counts every cached token")
def next_turn(conversation):
    first, turn = conversation["first"], conversation["turn"]
    assert turn.choices[0].message.content.strip(), turn
    assert first.usage.prompt_tokens <= turn.usage.prompt_tokens_details.cached_tokens < turn.usage.prompt_tokens
    cached = [conversation[k].usage.prompt_tokens_details.cached_tokens for k in ("first", "again", "turn")]
    assert conversation["counted"] == sum(cached), (conversation["counted"], cached)


@then("the question asked with a new cache_salt reads the shared prefix only, then all but its last token")
def salted(server, conversation):
    first = conversation["first"]
    question = [{"role": "user", "content": "What is the capital of France?"}]
    salt = {"cache_salt": uuid.uuid4().hex}  # new to this server

    def ask():
        return openai_client(server).chat.completions.create(
            model="langchain-e2e-model", messages=question, max_tokens=24, temperature=0, extra_body=salt
        )

    alone, again = ask(), ask()
    shared = alone.usage.prompt_tokens_details.cached_tokens
    assert 0 < shared < first.usage.prompt_tokens - 1, alone.usage  # the chat markup every prompt starts with
    assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens - 1, again.usage
    assert alone.choices[0].message.content == again.choices[0].message.content == first.choices[0].message.content


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"result": {"type": "string", "enum": ["yes", "no"]}, "rationale": {"type": "string"}},
    "required": ["result", "rationale"],
    "additionalProperties": False,
}


@when(
    parsers.parse('the OpenAI client asks "{question}" with a JSON schema of result (yes or no) and rationale'),
    target_fixture="completion",
)
def openai_asks_for_json(server, question):
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}}
    return openai_client(server).chat.completions.create(
        model="langchain-e2e-model", messages=[{"role": "user", "content": question}], response_format=response_format
    )


@then("the answer parses as JSON that the schema accepts, and so does a json_object answer")
def json_answers(server, completion):
    import jsonschema

    assert completion.choices[0].finish_reason == "stop", completion  # the grammar ended it, complete
    jsonschema.validate(json.loads(completion.choices[0].message.content), VERDICT_SCHEMA)
    anything = openai_client(server).chat.completions.create(
        model="langchain-e2e-model",
        messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(anything.choices[0].message.content), dict), anything


@then("a schema with a look-behind pattern gets 400 saying the server cannot enforce it, and the server keeps serving")
def unenforceable_schema(server):
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}},
    }
    refused = server.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400, refused.text
    assert "cannot enforce that JSON schema" in refused.text and "look-around" in refused.text, refused.text
    assert server.post("/ask", json=ASK).status_code == 200


@then(parsers.parse('the completion mentions "{text}" and reports its token usage'))
def completion_content(completion, text):
    assert text in completion.choices[0].message.content, completion
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0


@when(parsers.parse('the OpenAI client streams "{question}"'), target_fixture="chunks")
def openai_streams(server, question):
    stream = openai_client(server).chat.completions.create(
        model="langchain-e2e-model", messages=[{"role": "user", "content": question}], max_tokens=16, stream=True
    )
    return list(stream)


@then(parsers.parse('several chunks arrived that together mention "{text}" and the last one says why it stopped'))
def streamed_chunks(chunks, text):
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 2 and text in "".join(pieces), pieces
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


@then("asked for usage in the stream, a last chunk holds the usage the same question gets unstreamed")
def streamed_usage(server):
    client, messages = openai_client(server), [{"role": "user", "content": "What is Python?"}]
    ask = {"model": "langchain-e2e-model", "messages": messages, "max_tokens": 16, "temperature": 0}
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    whole = client.chat.completions.create(**ask)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert 0 < last.usage.prompt_tokens_details.cached_tokens < last.usage.prompt_tokens


@then(parsers.parse('the OpenAI client lists the model "{model_id}"'))
def lists_model(server, model_id):
    assert [m.id for m in openai_client(server).models.list()] == [model_id]


@when(parsers.parse('I stream "{question}" from "{path}"'), target_fixture="events")
def stream_sse(server, question, path):
    events = []
    body = {"question": question, "max_new_tokens": 16}
    with httpx.stream("POST", server.base + path, json=body, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")]
    return events


@then("several token events arrived before a done event with the whole answer")
def token_events(events):
    tokens = [e["token"] for e in events[:-1]]
    assert len(tokens) > 2 and events[-1]["done"] is True
    assert events[-1]["answer"] == "".join(tokens).strip()


@when(parsers.parse('I start "{command}" on a free port'), target_fixture="server")
def start_main(workspace, servers, tmp_path_factory, command):
    tracking = f"serve.tracking_port={free_port()}"  # the lean tracking server its traces go through

    def main_command(port: int) -> list[str]:
        own = [f"data_dir={workspace.data_dir}", f"serve.port={port}", tracking]
        return [sys.executable, "main.py", *command.split()[2:], *own]

    log = tmp_path_factory.mktemp("main-serve") / "serve.log"
    servers[command] = start_server(workspace, {}, log, main_command)
    return servers[command]


@then(parsers.parse('it becomes ready and answers "{path}"'), target_fixture="response")
def main_serves(server, path):
    response = server.post(path, json=ASK)
    assert response.status_code == 200 and "Paris" in response.json()["answer"], response.text
    assert response.json()["model_version"] == "1"
    return response


@then("the answer is a trace in the serve run's experiment, through the tracking server started beside it")
def main_traces(workspace, response):
    trace = read_trace(workspace, response.json()["trace_id"])
    (run,) = workspace.stage_runs("serve")[:1]
    assert trace.info.experiment_id == run.info.experiment_id
    assert ASK["question"] in json.dumps(trace.data.spans[0].inputs)


@then("SIGTERM to its process alone ends it with status 0, stops the tracking server beside it and finishes its runs")
def main_stops(workspace, server: Server):
    log = server.log.read_text()
    tracker = re.search(r"every answer is traced into experiment \S+ through (http://\S+)", log)
    assert tracker and processes.answers(f"{tracker[1]}/health"), log[-3000:]
    server.proc.send_signal(signal.SIGTERM)  # to the process, not its group: the tracker is in a session of its own
    assert server.proc.wait(timeout=120) == 0, server.log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while processes.answers(f"{tracker[1]}/health") and time.monotonic() < deadline:
        time.sleep(0.2)  # polling: the tracker's worker closes its socket just after its parent has gone
    assert not processes.answers(f"{tracker[1]}/health"), f"the tracking server at {tracker[1]} outlived mode=serve"
    (run,) = workspace.stage_runs("serve")[:1]
    parent = workspace.client().get_run(run.data.tags["mlflow.parentRunId"])
    assert (run.info.status, parent.info.status) == ("FINISHED", "FINISHED")


def wait_for_stats(server, predicate, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = server.get("/model/info").json()["stats"]
        if predicate(stats):
            return stats
        time.sleep(0.05)  # polling the server's own counters
    raise AssertionError(f"stats never matched: {stats}")


@when(
    "one client's long question is being generated and another client gives up while queued",
    target_fixture="first_answer",
)
def give_up_while_queued(server):
    before = server.get("/model/info").json()["stats"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long = pool.submit(server.post, "/ask", json={**ASK, "max_new_tokens": 64})
        wait_for_stats(server, lambda s: s["running"] == 1)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.base + "/ask", json=ASK, timeout=0.5)
        answer = long.result()
    wait_for_stats(server, lambda s: s["abandoned"] > before["abandoned"])
    return answer


@then("the abandoned request is dropped before generation and the first client still gets its answer")
def abandoned(server, first_answer):
    assert first_answer.status_code == 200 and "Paris" in first_answer.json()["answer"]
    stats = server.get("/model/info").json()["stats"]
    assert stats["abandoned"] >= 1 and stats["running"] == 0 and stats["max_batch_size_seen"] == 1
    assert server.post("/ask", json=ASK).status_code == 200


@then(parsers.parse('a browser preflight from "{allowed}" is allowed and one from "{other}" is not'))
def cors(server, allowed, other):
    def preflight(origin):
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        return httpx.options(server.base + "/ask", headers=headers, timeout=10)

    assert preflight(allowed).headers.get("access-control-allow-origin") == allowed
    assert "access-control-allow-origin" not in preflight(other).headers


def stats_of(server) -> dict:
    return server.get("/model/info").json()["stats"]


@when("a short question arrives while a long answer is being generated", target_fixture="race")
def short_during_long(server):
    before = stats_of(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long = pool.submit(server.post, "/ask", json=LONG)
        wait_for_stats(server, lambda s: s["running"] == 1 and s["requests"] > before["requests"])
        short = server.post("/ask", json={**ASK, "max_new_tokens": 8})
        long_was_done = long.done()
        return {"before": before, "short": short, "long": long.result(), "long_was_done": long_was_done}


@then("the short answer comes back before the long one")
def short_first(race):
    assert race["short"].status_code == 200 and race["long"].status_code == 200
    assert not race["long_was_done"], "the long answer finished before the short one came back"
    assert race["short"].json()["tokens"] <= 8 < race["long"].json()["tokens"]


@then("the model info shows a decoding step with both requests in it")
def shared_step(server, race):
    steps_of_two = stats_of(server)["batch_sizes"].get("2", 0)
    assert steps_of_two > race["before"]["batch_sizes"].get("2", 0), stats_of(server)


@when("a client gives up while its long answer is being generated", target_fixture="gave_up")
def give_up_mid_generation(server):
    before = stats_of(server)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base + "/ask", json=LONG, timeout=1.5)
    after = wait_for_stats(server, lambda s: s["abandoned"] > before["abandoned"], timeout_s=5)
    return {"before": before, "after": after, "gave_up_at": time.monotonic()}


@then("its row is freed before the answer is complete and the next client is served")
def row_freed(server, gave_up):
    before, after = gave_up["before"], gave_up["after"]
    assert after["running"] == 0, after  # freed within seconds, where the whole answer takes about 9
    assert after["tokens_generated"] - before["tokens_generated"] < LONG["max_new_tokens"], after
    assert server.post("/ask", json=ASK).status_code == 200


@then(parsers.parse('the model info shows dtype "{dtype}" on "{device}" with "{acceleration}"'))
def model_info_engine(server, dtype, device, acceleration):
    info = server.get("/model/info").json()
    assert (info["dtype"], info["device"]) == (dtype, device), info
    assert acceleration in info["acceleration"], info["acceleration"]
    assert info["parameters"] > 100_000_000  # packed layers still counted


@then(parsers.parse("the model info soon reports how many of the {count:d} evaluation answers match float32"))
def agreement_reported(server, count):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        agreement = server.get("/model/info").json()["dtype_agreement"]
        if "identical" in agreement:
            assert agreement["questions"] == count and 0 <= agreement["identical"] <= count, agreement
            return
        assert agreement == {"reference": "float32", "status": "measuring while idle"}, agreement
        time.sleep(0.5)  # polling interval: the measurement runs in the server's idle time
    raise AssertionError("no agreement reported within 120 s")


@given("this machine has no CUDA GPU")
def no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: asking for one is not an error here")


# an answer that takes seconds even in a batch of 8 on a fast machine: all 192 tokens (checked alone first)
LONG = {"question": "Write a long story about a robot who learns to paint.", "max_new_tokens": 192}


@when("8 answers are in flight and the server gets SIGTERM", target_fixture="drained")
def sigterm_in_flight(server):
    alone = [server.post("/ask", json=body).json()["answer"] for body in DRAINED[:2]]
    return {"alone": alone * 4, **sigterm_while_answering(server, DRAINED)}


@when("8 long answers are in flight and the server gets SIGTERM", target_fixture="drained")
def sigterm_long_in_flight(server):
    alone = server.post("/ask", json=LONG).json()
    assert alone["tokens"] == LONG["max_new_tokens"], f"not a long answer: {alone}"
    return sigterm_while_answering(server, [LONG] * 8)


def sigterm_while_answering(server, bodies: list[dict]) -> dict:
    """SIGTERM once every body is in the running batch; how the answers ended and when the socket closed."""
    before = stats_of(server)
    pool = concurrent.futures.ThreadPoolExecutor(len(bodies))
    answers = [pool.submit(server.post, "/ask", json=body) for body in bodies]
    wait_for_stats(server, lambda s: s["running"] == len(bodies) and s["requests"] >= before["requests"] + len(bodies))
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    refused = None
    while refused is None and time.monotonic() - signalled < 10:
        try:
            httpx.get(server.base + "/health", timeout=2)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            # refused, or reset unanswered: a connection the kernel queued as the listening socket closed
            refused = time.monotonic() - signalled
        else:
            time.sleep(0.05)  # polling for the listening socket to close
    in_flight_then = sum(not a.done() for a in answers)
    pool.shutdown(wait=True)
    return {
        "responses": [a.result() for a in answers],
        "refused_after_s": refused,
        "in_flight_when_refused": in_flight_then,
        "signalled": signalled,
    }


@then("new connections are refused while they finish")
def refused_while_draining(drained):
    assert drained["refused_after_s"] is not None, "the server still accepted connections 10 s after SIGTERM"
    assert drained["in_flight_when_refused"] > 0, drained


@then("all 8 answers come back whole, as each question is answered alone")
def drained_whole(drained):
    responses = drained["responses"]
    assert [r.status_code for r in responses] == [200] * len(DRAINED), [r.text for r in responses]
    assert [r.json()["answer"] for r in responses] == drained["alone"]


@then("each answer gets 503 of type stopping with Retry-After, saying to send it again")
def cut_at_drain_end(drained):
    responses = drained["responses"]
    assert [r.status_code for r in responses] == [503] * len(responses), [r.text for r in responses]
    for r in responses:
        (error,) = r.json()["detail"]
        assert error["type"] == "stopping" and "SERVING_DRAIN_S" in error["msg"] and "send it again" in error["msg"]
        assert int(r.headers["retry-after"]) > 0


@then("the server process ends by itself within its drain time")
def ended_by_itself(server, drained):
    drain_s = float(server.env["SERVING_DRAIN_S"])
    left = drain_s + 30 - (time.monotonic() - drained["signalled"])  # the drain, then the lifespan's shutdown
    code = server.proc.wait(timeout=max(left, 1))
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM, 0), code  # uvicorn re-raises the signal once drained
