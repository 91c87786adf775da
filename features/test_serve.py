from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pytest_bdd import scenarios, then

scenarios("serve.feature")

READY_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)  # polling interval while the server loads, not a stand-in for readiness
    raise AssertionError(f"not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@then("the printed mlflow models serve command, on a free port, answers dataframe_split and inputs payloads")
def printed_command_serves(workspace, invocation, tmp_path):
    line = next(ln.strip() for ln in invocation.stdout.splitlines() if "mlflow models serve" in ln)
    words = shlex.split(line)
    prefix = next(i for i, w in enumerate(words) if "=" not in w)  # VAR=value words before the command
    env = dict(w.split("=", 1) for w in words[:prefix])
    command = words[prefix:]
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    venv_bin = str(Path(sys.executable).parent)  # as with `source .venv/bin/activate`
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            env=workspace.env({**env, "PATH": f"{venv_bin}:{os.environ['PATH']}"}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(proc, f"{base}/ping", log)
        split = post(
            f"{base}/invocations",
            {
                "dataframe_split": {"columns": ["question"], "data": [["What is the capital of France?"]]},
                "params": {"max_new_tokens": 12},
            },
        )
        assert len(split["predictions"]) == 1 and "Paris" in split["predictions"][0], split
        inputs = post(f"{base}/invocations", {"inputs": ["What is Python?", "Hi"], "params": {"max_new_tokens": 8}})
        assert len(inputs["predictions"]) == 2 and all(p.strip() for p in inputs["predictions"]), inputs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
