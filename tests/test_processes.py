"""lifecycle.processes: a server process started beside the lifecycle's work, ready once its URL answers, stopped with
its children; one that dies or never answers is reported with its log."""

from __future__ import annotations

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
