"""Hydra multirun sweeps (``python main.py -m mode=experiment prompt=glob(*)``): one MLflow run for the sweep, one
child run per job, and a verdict at the end.

``SweepCallback`` (registered in conf/hydra/default.yaml) does the sweep's own work, in the process that launched it:

- ``on_multirun_start``: checks the store and converts the model once, and registers every usable prompt once.
  With SQLite it switches the database to WAL, so parallel jobs wait for each other instead of failing. It then
  opens the sweep's run. Its id reaches the jobs through the environment, which joblib workers inherit.
- ``on_multirun_end``: reads the jobs' runs back from MLflow and ranks them by ``sweep.rank_by``. It prints the
  table, logs it with a bar chart to the sweep's run, moves the prompt alias ``sweep.best_alias`` to the best
  job's prompt version, and exits 1 when a job failed.

Inside a job, ``current_job()`` tells the runner it is part of a sweep. A failed job returns 1 instead of raising:
Hydra's basic sweeper re-raises a job's exception after its batch, which would end the sweep without a verdict.
The failure stays in the job's MLflow run, and the summary reports it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback

ENV_RUN = "LIFECYCLE_SWEEP_RUN_ID"
ENV_ID = "LIFECYCLE_SWEEP_ID"
ENV_PID = "LIFECYCLE_SWEEP_PID"
TAG_SWEEP = "lifecycle.sweep_id"
TAG_JOB = "lifecycle.sweep_job"
TAG_OVERRIDES = "lifecycle.overrides"


@dataclass(frozen=True)
class SweepJob:
    run_id: str  # the sweep's run, parent of the job's runs
    sweep_id: str
    num: int
    overrides: tuple[str, ...]
    in_sweep_process: bool  # the basic launcher: this job runs in the process that will end the sweep

    def tags(self) -> dict[str, str]:
        return {TAG_SWEEP: self.sweep_id, TAG_JOB: str(self.num), TAG_OVERRIDES: " ".join(self.overrides)}


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


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.sweep: tuple[str, str] | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from lifecycle.integrations import sweeps

        run_id, sweep_id = sweeps.start(config)
        self.sweep = (run_id, sweep_id)
        os.environ[ENV_RUN], os.environ[ENV_ID], os.environ[ENV_PID] = run_id, sweep_id, str(os.getpid())
        print(f"sweep {sweep_id}: MLflow run {run_id}", flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.sweep is None:
            return
        from lifecycle.integrations import sweeps

        run_id, sweep_id = self.sweep
        for name in (ENV_RUN, ENV_ID, ENV_PID):
            os.environ.pop(name, None)
        summary = sweeps.finish(config, run_id, sweep_id)
        print(summary.text, flush=True)
        if summary.failed:
            print(f"{summary.failed} of {summary.jobs} sweep jobs failed (see the table above)", file=sys.stderr)
            raise SystemExit(1)
