"""What ``main.py`` does with a composed config: run it, print the summary, exit non-zero on failure.

Importing this module registers the config's schema and resolvers: ``main.py`` imports it before Hydra composes,
and so does a Ray worker when it unpickles a sweep job (hydra/launcher=ray), before it resolves the job's config.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from lifecycle import console, runner, summary
from lifecycle.config import register_configs
from lifecycle.redact import redact_text

register_configs()


def enter_launch_folder() -> None:
    """Run where the command was launched. A Ray worker starts in the folder `ray start` ran in; a relative data_dir
    and the prompt files must mean what they meant to the user (Hydra keeps that folder as hydra.runtime.cwd)."""
    from hydra.core.hydra_config import HydraConfig

    launched = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else None
    if launched and launched.is_dir() and launched.resolve() != Path.cwd().resolve():
        os.chdir(launched)


def execute(cfg: DictConfig) -> int:
    """Run, print the summary, exit 1 on failure; or return 1 where the session says so (a job of a sweep:
    Hydra's sweeper re-raises a job's exception once its batch is done, which would end the sweep before its
    summary; the failure is in the job's MLflow run, and the sweep exits 1 at its end)."""
    enter_launch_folder()
    console.configure(cfg.verbose)
    report = runner.run(cfg)
    print(redact_text(summary.render(report, ui_port=cfg.serve.tracking_port)), flush=True)
    if report.failed and report.raises_on_failure:
        raise SystemExit(1)
    return 1 if report.failed else 0
