"""A local Ray cluster for the tests and the benchmarks: ``ray start --head --block`` on free loopback ports, in a
folder of its own, stopped with its process group.

``ray stop`` would stop every Ray process of this user on the machine, another test's cluster too; this cluster's
processes are its own group instead (Ray's workers end with their raylet). Ray keeps its sessions under one folder of
the machine (/tmp/ray), so the clusters started here take a lock: one at a time, the next waits.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devservices.ports import free_ports
from lifecycle import processes

READY_S = 120
QUIET = ("--include-dashboard=false", "--disable-usage-stats")
LOCK = Path(tempfile.gettempdir()) / "lifecycle-ray-cluster.lock"
STOP_GRACE_S = 5  # the raylet drains for up to 30 s on SIGTERM: nothing here needs that


@contextlib.contextmanager
def local_cluster(
    folder: Path, cpus: int = 2, wait_s: float = 1800, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A head node with ``cpus`` CPUs and a 100 MB object store, started in ``folder`` (its workers start there, its
    log is ``folder/ray.log``) with ``env`` added to this process's environment (what a node's replicas read, such
    as SERVING_API_KEY); yields its address, ``127.0.0.1:<port>``. ``processes.NotReady`` with the log's end when it
    does not start; a Timeout when another cluster holds the lock for more than ``wait_s``."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ray.log"
    port, client_port = free_ports(2)
    argv = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    argv += [f"--port={port}", f"--ray-client-server-port={client_port}", f"--num-cpus={cpus}"]
    argv += ["--object-store-memory=100000000", *QUIET]

    def started() -> bool:
        return log.exists() and "Ray runtime started" in log.read_text(errors="replace")

    with FileLock(LOCK, timeout=wait_s):
        proc = processes.start(argv, {**os.environ, **(env or {})}, started, log, READY_S, cwd=folder)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            processes.stop(proc, grace_s=STOP_GRACE_S)
