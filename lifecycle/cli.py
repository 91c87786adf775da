"""What ``main.py`` does with a composed config: run it, print the summary, exit non-zero on failure."""

from __future__ import annotations

from omegaconf import DictConfig

from lifecycle import console, runner, summary
from lifecycle.redact import redact_text


def execute(cfg: DictConfig) -> int:
    """Run, print the summary, exit 1 on failure; or return 1 where the session says so (a job of a sweep:
    Hydra's sweeper re-raises a job's exception once its batch is done, which would end the sweep before its
    summary; the failure is in the job's MLflow run, and the sweep exits 1 at its end)."""
    console.configure(cfg.verbose)
    report = runner.run(cfg)
    print(redact_text(summary.render(report, ui_port=cfg.serve.tracking_port)), flush=True)
    if report.failed and report.raises_on_failure:
        raise SystemExit(1)
    return 1 if report.failed else 0
