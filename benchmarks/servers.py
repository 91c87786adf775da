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


def try_start(command: list[str], env: dict, ready_url: str) -> tuple[subprocess.Popen, float]:
    """``command`` running, and the seconds it took until ``ready_url`` answered 200; ``processes.NotReady``, naming
    the command, when it dies or is not ready within READY_TIMEOUT_S."""
    started = time.perf_counter()
    try:
        proc = processes.start(command, env, ready_url, None, READY_TIMEOUT_S, cwd=ROOT)
    except processes.NotReady as exc:
        raise processes.NotReady(f"{command[:3]}: {exc}") from None
    return proc, time.perf_counter() - started


def start(command: list[str], env: dict, ready_url: str) -> tuple[subprocess.Popen, float]:
    """``try_start``, exiting the benchmark with the reason when the command does not start."""
    try:
        return try_start(command, env, ready_url)
    except processes.NotReady as exc:
        sys.exit(str(exc))


def stop(proc: subprocess.Popen) -> None:
    processes.stop(proc, grace_s=30)
