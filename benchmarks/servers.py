"""The server processes the benchmarks start, with the project's process helper (``lifecycle.processes``): started
in their own session, timed until their ready URL answers 200, and stopped with their children."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lifecycle import processes

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 300


def start(command: list[str], env: dict, ready_url: str) -> tuple[subprocess.Popen, float]:
    """``command`` running, and the seconds it took until ``ready_url`` answered 200 (exits the benchmark, naming
    the command, when it dies or is not ready within READY_TIMEOUT_S)."""
    started = time.perf_counter()
    try:
        proc = processes.start(command, env, ready_url, None, READY_TIMEOUT_S, cwd=ROOT)
    except processes.NotReady as exc:
        sys.exit(f"{command[:3]}: {exc}")
    return proc, time.perf_counter() - started


def stop(proc: subprocess.Popen) -> None:
    processes.stop(proc, grace_s=30)
