"""A server process the lifecycle starts beside its own work (the lean tracking server that ``mode=serve
serve.run=true`` records its traces through): started in its own session, ready once its URL answers 200, and
stopped with its children, escalating to SIGKILL when it does not end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

POLL_S = 0.2  # how often readiness is asked while the process starts


class NotReady(RuntimeError):
    """The process exited, or did not answer, before it was ready; the message ends with its log's last lines."""


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(command: Sequence[str], env: Mapping[str, str], ready_url: str, log: Path, timeout_s: float):
    """``command`` running, once ``ready_url`` answers 200; ``NotReady`` (it is stopped then) otherwise."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            list(command), env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while not answers(ready_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            why = f"exited {proc.returncode}" if proc.returncode is not None else f"not ready after {timeout_s:g} s"
            tail = log.read_text(errors="replace")[-1500:]
            raise NotReady(f"{Path(command[0]).name} {why} (log {log}):\n{tail}")
        time.sleep(POLL_S)
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
