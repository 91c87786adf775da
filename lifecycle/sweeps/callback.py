"""``SweepCallback``, registered in conf/hydra/default.yaml: the sweep's own work, in the process that launched it.

- ``on_multirun_start``: checks that the launcher's workers can reach the tracking store (Ray's need a server),
  checks the store and converts the model once, and registers every usable prompt once.
  With SQLite it switches the database to WAL, so parallel jobs wait for each other instead of failing. It then
  opens the sweep's run and announces it to the jobs (``launchers.prepare`` passes it on to Ray's tasks).
- ``on_multirun_end``: reads the jobs' runs back from MLflow and ranks them by ``sweep.rank_by``. It prints the
  table, logs it with a bar chart to the sweep's run, moves the prompt alias ``sweep.best_alias`` to the best
  job's prompt version, and exits 1 when a job failed.

A failed job returns 1 instead of raising (``lifecycle.sessions``): Hydra's basic sweeper re-raises a job's
exception after its batch, which would end the sweep without a verdict. The failure stays in the job's MLflow run,
and the summary reports it.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback

from lifecycle import sweep_job as job
from lifecycle.stage import StageError
from lifecycle.sweeps import launchers


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.sweep: tuple[str, str] | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from lifecycle import console
        from lifecycle.integrations import sweep_runs

        console.configure(config.verbose)
        try:
            launchers.check(config)
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        run_id, sweep_id = sweep_runs.start(config)
        self.sweep = (run_id, sweep_id)
        launchers.prepare(config, job.announce(run_id, sweep_id))
        print(f"sweep {sweep_id}: MLflow run {run_id}", flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.sweep is None:
            return
        from lifecycle.integrations import sweep_runs

        run_id, sweep_id = self.sweep
        job.forget()
        summary = sweep_runs.finish(config, run_id, sweep_id)
        print(summary.text, flush=True)
        if summary.failed:
            print(f"{summary.failed} of {summary.jobs} sweep jobs failed (see the table above)", file=sys.stderr)
            raise SystemExit(1)
