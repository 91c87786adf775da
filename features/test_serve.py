from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pytest_bdd import scenarios, then

from devservices.ports import free_port
from lifecycle import processes

from .conftest import serving_command

scenarios("serve.feature")

READY_TIMEOUT_S = 180


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


PAYLOADS = [
    {
        "dataframe_split": {"columns": ["question"], "data": [["What is the capital of France?"]]},
        "params": {"max_new_tokens": 12},
    },
    {"inputs": ["What is Python?", "Hi"], "params": {"max_new_tokens": 8}},
]


def run_and_post(command: list[str], env: dict, ready_path: str, port: int, log: Path) -> list[dict]:
    base = f"http://127.0.0.1:{port}"
    try:
        proc = processes.start(command, env, base + ready_path, log, READY_TIMEOUT_S)
    except processes.NotReady as exc:
        raise AssertionError(str(exc)) from None
    try:
        return [post(f"{base}/invocations", payload) for payload in PAYLOADS]
    finally:
        processes.stop(proc, grace_s=30)


@pytest.fixture
def mlflow_predictions() -> list:
    return []


@then("the printed mlflow models serve command, on a free port, answers dataframe_split and inputs payloads")
def printed_command_serves(workspace, invocation, tmp_path, mlflow_predictions):
    line = next(ln.strip() for ln in invocation.stdout.splitlines() if "mlflow models serve" in ln)
    words = shlex.split(line)
    prefix = next(i for i, w in enumerate(words) if "=" not in w)  # VAR=value words before the command
    env = dict(w.split("=", 1) for w in words[:prefix])
    command = words[prefix:]
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    venv_bin = str(Path(sys.executable).parent)  # as with `source .venv/bin/activate`
    env = workspace.env({**env, "PATH": f"{venv_bin}:{os.environ['PATH']}"})
    split, inputs = run_and_post(command, env, "/ping", port, tmp_path / "serve.log")
    assert len(split["predictions"]) == 1 and "Paris" in split["predictions"][0], split
    assert len(inputs["predictions"]) == 2 and all(p.strip() for p in inputs["predictions"]), inputs
    mlflow_predictions.extend([split, inputs])


@then("python -m serving answers the same payloads with the same predictions")
def same_predictions(workspace, tmp_path, mlflow_predictions):
    port = free_port()
    env = workspace.env({"MLFLOW_TRACKING_URI": workspace.tracking_uri})
    ours = run_and_post(serving_command()(port), env, "/health", port, tmp_path / "ours.log")
    assert ours == mlflow_predictions  # greedy decoding: the same text, word for word
