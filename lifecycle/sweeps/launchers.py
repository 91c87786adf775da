"""What a sweep needs from the launcher that runs its jobs, set before Hydra instantiates it.

Hydra's basic launcher runs the jobs in this process, and the joblib launcher in processes it starts: both inherit
this process's environment, where ``job.announce`` put the sweep's identity. ``hydra/launcher=ray``
(hydra-ray-launcher) runs each job as a Ray task, in worker processes of a cluster that may span machines and
that inherit nothing from here. For it:

- ``check(config)`` refuses a tracking URI the workers cannot share: SQLite is a file on this machine (and a
  PostgreSQL URL would hand every worker the database itself); they record through a tracking server over HTTP;
- ``prepare(config, job_environment)`` passes the sweep's identity to the jobs in the tasks' ``runtime_env``
  (Ray's own way to set a task's environment), and connects to a running cluster when
  ``hydra.launcher.ray.init.address`` (or ``RAY_ADDRESS``) names one: the launcher otherwise asks ``ray.init`` for a
  75 MB object store, which Ray refuses for a cluster it did not start.

``SweepCallback.on_multirun_start`` calls both: Hydra runs the callbacks before it instantiates the sweeper and its
launcher, so what is set here is what the launcher gets.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import open_dict, read_write

from lifecycle import console
from lifecycle.stage import StageError
from lifecycle.stores import is_server

RAY_TARGET = "hydra_plugins.hydra_ray_launcher"


def is_ray(config: Any) -> bool:
    return str(config.hydra.launcher.get("_target_", "")).startswith(RAY_TARGET)


def check(config: Any) -> None:
    """Before anything is written: the launcher's workers can share the tracking store."""
    if not is_ray(config) or is_server(config.tracking_uri):
        return
    tracking_uri = config.tracking_uri
    raise StageError(
        f"hydra/launcher=ray runs the jobs in Ray worker processes, on any machine of the cluster, and they cannot "
        f"share tracking_uri={tracking_uri}: "
        + (
            "SQLite is one file on this machine, written by one process at a time"
            if tracking_uri.startswith("sqlite")
            else "each worker would need the store's credentials and reach it directly"
        )
        + f". Start a tracking server ({console.command()} mode=server-config backend=postgresql serve.run=true) "
        "and sweep "
        "with tracking_uri=http://<its host>:<its port>; README: 'From a laptop to a team'"
    )


def prepare(config: Any, job_environment: dict[str, str]) -> None:
    """Adapt ``config.hydra.launcher`` for the sweep; nothing to do for launchers whose jobs inherit this process."""
    if not is_ray(config):
        return
    ray = config.hydra.launcher.ray
    with read_write(ray), open_dict(ray):
        if ray.init.get("address") or os.environ.get("RAY_ADDRESS"):
            ray.init.setdefault("object_store_memory", None)  # the cluster already has its object store
        remote = ray.remote
        env_vars = dict(remote.get("runtime_env", {}).get("env_vars", {}))
        env_vars.update(job_environment)
        remote["runtime_env"] = {**remote.get("runtime_env", {}), "env_vars": env_vars}
