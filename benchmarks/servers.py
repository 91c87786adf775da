"""The server processes the benchmarks start: started in their own session, timed until their ready URL answers 200,
and stopped with their children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 300


def start(command: list[str], env: dict, ready_url: str) -> tuple[subprocess.Popen, float]:
    """``command`` running, and the seconds it took until ``ready_url`` answered 200 (exits the benchmark, naming
    the command, when it dies or is not ready within READY_TIMEOUT_S)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            sys.exit(f"{command[:3]} exited {proc.returncode}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval for start-to-ready
    stop(proc)
    sys.exit(f"{command[:3]} not ready after {READY_TIMEOUT_S} s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
