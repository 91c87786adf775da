"""Steps of features/contract.feature: one `python -m serving` with small limits for the feature, schemathesis (pinned
in the dev extras) run against its live /openapi.json, and Debian's Chromium opening /docs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from .conftest import LIMITS, ROOT, Server, assert_no_difference, launch, schemathesis, tool_missing

scenarios("contract.feature")

ARTIFACTS = Path(os.environ.get("LIFECYCLE_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def limited_server(model_cache, tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("contract") / "serving.log"

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "serving", "--model-uri", str(model_cache / "smollm2"), "--port", str(port)]

    server = launch(argv, {**os.environ, **LIMITS}, log, timeout_s=180)
    yield server
    server.stop()


@given('"python -m serving" with small limits is running', target_fixture="server")
def running(limited_server) -> Server:
    return limited_server


@when(
    parsers.parse("schemathesis runs every check, {examples:d} examples per operation, against its /openapi.json"),
    target_fixture="contract_run",
)
def run_schemathesis(server: Server, tmp_path, examples) -> subprocess.CompletedProcess:
    return schemathesis(server.base, tmp_path, examples=examples)


@then(
    "it finds no difference between the document and the server, and no valid request refused for a reason the "
    "document does not state"
)
def no_difference(contract_run: subprocess.CompletedProcess):
    assert_no_difference(contract_run)
    assert "refused_only_for_stated_reasons" not in contract_run.stdout  # our own check ran and found nothing


@when("I read its /openapi.json", target_fixture="document")
def read_document(server: Server) -> dict:
    return server.get("/openapi.json").json()


def _schema(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


@then(
    parsers.parse(
        "a question may have at most {chars:d} characters, max_new_tokens at most {cap:d} and a batch at most "
        "{batch:d} questions"
    )
)
def limits_in_document(document: dict, chars, cap, batch):
    ask = _schema(document, "AskRequest")["properties"]
    assert ask["question"]["maxLength"] == chars and ask["question"]["minLength"] == 1
    assert {"type": "integer", "maximum": cap, "minimum": 1} in ask["max_new_tokens"]["anyOf"]
    assert _schema(document, "BatchRequest")["properties"]["questions"]["maxItems"] == batch
    assert "oneOf" in _schema(document, "InvocationRequest")


@then("every 4xx of every operation has the one error body, and the streams are text/event-stream")
def one_error_shape(document: dict):
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"] == error, (path, status)
    assert list(document["paths"]["/ask/stream"]["post"]["responses"]["200"]["content"]) == ["text/event-stream"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


OVER_THE_LIMIT = "0" * 100  # within the 100 characters a question may have; a digit is a token, so over 64 tokens
PROMPTS = {
    "/ask": {"question": OVER_THE_LIMIT},
    "/ask/batch": {"questions": ["What is Python?", OVER_THE_LIMIT]},
    "/ask/stream": {"question": OVER_THE_LIMIT},
    "/invocations": {"inputs": [OVER_THE_LIMIT]},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": OVER_THE_LIMIT}]},
}


@then(
    parsers.parse(
        "the {count:d} operations that read a prompt state a limit of {limit:d} tokens, and their 400 names "
        "context_length_exceeded"
    )
)
def limit_stated(document: dict, count, limit):
    assert len(PROMPTS) == count
    for path in PROMPTS:
        operation = document["paths"][path]["post"]
        assert f"at most **{limit} tokens**" in operation["description"], (path, operation.get("description"))
        assert "type context_length_exceeded" in operation["responses"]["400"]["description"], path


@then("a prompt over it gets 400 context_length_exceeded with its token count on each of them")
def over_the_limit(server: Server, document: dict):
    limit = int(document["paths"]["/ask"]["post"]["description"].split("at most **")[1].split()[0])
    for path, body in PROMPTS.items():
        response = server.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        (item,) = response.json()["detail"]
        assert item["type"] == "context_length_exceeded", (path, item)
        count = int(item["msg"].split("the prompt has ")[1].split()[0])
        assert count > limit and f"at most {limit}" in item["msg"], (path, item)
    assert server.post("/ask", json={"question": "What is Python?"}).status_code == 200  # and the server serves on


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        tool_missing("Chromium is not installed: `make test-tools` installs Debian's package where it can")
    return found


HEADLESS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000"]


@when("Chromium opens /docs", target_fixture="page")
def open_docs(server: Server, chromium: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "docs.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [chromium, *HEADLESS, "--window-size=1280,1600", f"--screenshot={shot}", f"{server.base}/docs"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    dom = subprocess.run(
        [chromium, *HEADLESS, "--dump-dom", f"{server.base}/docs"], capture_output=True, text=True, timeout=120
    )
    return dom.stdout


@then(
    parsers.parse(
        "the page shows all {count:d} operations, from assets the server serves itself, and a screenshot is kept"
    )
)
def operations_rendered(page: str, server: Server, count):
    document = server.get("/openapi.json").json()
    paths = list(document["paths"])
    assert len(paths) == count
    for path in paths:
        assert f'data-path="{path}"' in page, f"{path} not rendered; the page:\n{page[:3000]}"
    html = httpx.get(f"{server.base}/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn." not in html, html  # nothing from a CDN
    assert server.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    shot = ARTIFACTS / "docs.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
