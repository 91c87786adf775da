"""A job's identity in its sweep: which sweep, which job, what set it apart, as its runs' tags.

``SweepCallback`` opens the sweep's run before the first job and passes its id to the jobs through the
environment (joblib workers inherit it; Ray's get it in their tasks' runtime_env). Inside a job,
``current_job()`` says which sweep and job this is, or None outside a sweep.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from lifecycle import tags

ENV_RUN = "LIFECYCLE_SWEEP_RUN_ID"
ENV_ID = "LIFECYCLE_SWEEP_ID"
ENV_PID = "LIFECYCLE_SWEEP_PID"


@dataclass(frozen=True)
class SweepJob:
    run_id: str  # the sweep's run, parent of the job's runs
    sweep_id: str
    num: int
    overrides: tuple[str, ...]
    in_sweep_process: bool  # the basic launcher: this job runs in the process that will end the sweep

    def tags(self) -> dict[str, str]:
        return {
            tags.SWEEP_ID: self.sweep_id,
            tags.SWEEP_JOB: str(self.num),
            tags.OVERRIDES: " ".join(self.overrides),
            tags.SWEEP_WORKER: f"{socket.gethostname()}:{os.getpid()}",
        }


def announce(run_id: str, sweep_id: str) -> dict[str, str]:
    """Tell this process's jobs (and the worker processes it starts) which sweep they belong to; returns the
    variables, for launchers whose workers do not inherit this environment (``lifecycle.sweeps.launchers``)."""
    environment = {ENV_RUN: run_id, ENV_ID: sweep_id, ENV_PID: str(os.getpid())}
    os.environ.update(environment)
    return environment


def forget() -> None:
    for name in (ENV_RUN, ENV_ID, ENV_PID):
        os.environ.pop(name, None)


def current_job() -> SweepJob | None:
    """This job's place in a sweep, when Hydra runs it as part of one that SweepCallback opened."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not os.environ.get(ENV_RUN) or not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    same = os.environ.get(ENV_PID) == str(os.getpid())
    return SweepJob(os.environ[ENV_RUN], os.environ[ENV_ID], int(hydra.job.num), tuple(hydra.overrides.task), same)
