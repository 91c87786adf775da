"""Server processes started beside the work: the lean tracking server that ``mode=serve serve.run=true`` records its
traces through, and, with the same three calls, the dev services (``devservices``), the servers the features start
and the benchmarks' servers.

- ``start``: the command in its own session (so that stopping it stops its children), its output in a log; ready
  once ``ready`` says so (a URL that answers 2xx, or any check), ``NotReady`` with the log's last lines otherwise;
- ``stop``: SIGTERM to the whole group, SIGKILL after a grace period;
- ``answers``: whether a URL answers with a status below a bound (an S3 gateway's 403 means it is up);
- ``unwinding_on_sigterm``: SIGTERM as ``SystemExit`` for a block, so that what the process started (in sessions of
  their own, which a signal to its group does not reach) is stopped by its ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

POLL_S = 0.2  # how often readiness is asked while the process starts


class Terminated(SystemExit):
    """SIGTERM, inside ``unwinding_on_sigterm``."""


OPERATOR_STOP = (KeyboardInterrupt, Terminated)  # Ctrl-C, or SIGTERM inside ``unwinding_on_sigterm``


class NotReady(RuntimeError):
    """The process exited, or did not answer, before it was ready; the message ends with its log's last lines."""


def answers(url: str, below: int = 300) -> bool:
    """``url`` answers with a status under ``below`` (2xx by default)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < below
    except urllib.error.HTTPError as exc:
        return exc.code < below
    except (urllib.error.URLError, OSError):
        return False


def start(
    command: Sequence[str],
    env: Mapping[str, str] | None,
    ready: str | Callable[[], bool],
    log: Path | None,
    timeout_s: float,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """``command`` running, once ``ready`` (a URL answering 2xx, or a check) holds; ``NotReady`` otherwise, the
    process stopped (as it is when the wait is interrupted). ``env`` None: this process's environment; ``log`` None:
    the output is discarded."""
    check = ready if callable(ready) else (lambda: answers(ready))
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            list(command),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while not check():
            exited = proc.poll() is not None
            if exited or time.monotonic() > deadline:
                why = f"exited {proc.returncode}" if exited else f"not ready after {timeout_s:g} s"
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise NotReady(f"{Path(command[0]).name} {why}" + (f" (log {log}):\n{tail}" if log else ""))
            time.sleep(POLL_S)
    except BaseException:  # NotReady, or the caller interrupted (Ctrl-C, SIGTERM) while it waited: none outlives it
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:  # it ended between the poll and the signal
        proc.wait()


@contextlib.contextmanager
def unwinding_on_sigterm() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (a ``SystemExit``, status 143) inside the block, so ``finally`` blocks run, as
    they do for Ctrl-C's KeyboardInterrupt. A server that drains on SIGTERM (uvicorn) raises the signal again once it
    has stopped; with Python's default handler the process would end right there, and a process it started in a
    session of its own would outlive it. Outside the main thread (where no signal handler runs) the block is left
    as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum, frame) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
