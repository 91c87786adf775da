"""lifecycle.processes: a server process started beside the lifecycle's work, ready once its URL answers, stopped with
its children; one that dies or never answers is reported with its log."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from devservices.ports import free_port
from lifecycle import processes


def test_a_server_is_ready_once_it_answers_and_stops_with_its_group(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    proc = processes.start(command, {}, f"http://127.0.0.1:{port}/", tmp_path / "server.log", timeout_s=30)
    assert processes.answers(f"http://127.0.0.1:{port}/")
    processes.stop(proc)
    assert proc.returncode is not None and not processes.answers(f"http://127.0.0.1:{port}/")


def test_a_server_that_exits_before_it_is_ready_says_why_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('no database here'); sys.exit(3)"]
    with pytest.raises(processes.NotReady, match=r"exited 3[\s\S]*no database here"):
        processes.start(command, {}, f"http://127.0.0.1:{free_port()}/", tmp_path / "server.log", timeout_s=30)


def test_sigterm_unwinds_the_block_so_that_what_it_started_is_stopped(tmp_path):
    """The process holding the block gets SIGTERM alone (not its group): the server it started in a session of its
    own is stopped by the block's ``finally``, the process ends with status 143, and the handler was restored."""
    port = free_port()
    script = f"""
import signal, sys, time
from lifecycle import processes
before = signal.getsignal(signal.SIGTERM)
try:
    with processes.unwinding_on_sigterm():
        command = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
        server = processes.start(command, {{}}, "http://127.0.0.1:{port}/", None, timeout_s=30)
        try:
            print("serving", flush=True)
            time.sleep(120)
        finally:
            processes.stop(server)
finally:
    assert signal.getsignal(signal.SIGTERM) is before
"""
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert holder.stdout.readline().strip() == "serving"
    assert processes.answers(f"http://127.0.0.1:{port}/")
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 128 + signal.SIGTERM
    assert not processes.answers(f"http://127.0.0.1:{port}/")


def test_a_server_not_ready_in_time_or_interrupted_while_it_starts_is_stopped(tmp_path):
    """Whether the wait times out (NotReady says so, not an exit status of its own making) or the caller is
    interrupted while it waits (Ctrl-C, SIGTERM), the process started does not outlive the call."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"

    def interrupted() -> bool:  # the caller interrupted once the server is up, before it heard so
        if processes.answers(url):
            raise KeyboardInterrupt
        return False

    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        processes.start(command, {}, interrupted, tmp_path / "a.log", timeout_s=60)
    assert not processes.answers(url)
    never = lambda: False  # noqa: E731 - a server that never says it is ready
    with pytest.raises(processes.NotReady, match=r"python[\d.]* not ready after 1 s"):
        processes.start(command, {}, never, tmp_path / "b.log", timeout_s=1)
    assert not processes.answers(url)
