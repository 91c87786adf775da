"""What ``main.py`` does with a composed config: run it, print the summary, exit non-zero on failure; and the
installed command, ``genai-lifecycle`` (``main``), which does what ``python main.py`` does from any folder: the
config groups come with the package (``lifecycle/conf``, the checkout's ``conf/``), and a ``conf/`` in the folder it
runs in is added to Hydra's search path, so a user's own prompt templates, models or evaluation sets are options
beside the shipped ones.

Importing this module registers the config's schema and resolvers: ``main.py`` imports it before Hydra composes,
and so does a Ray worker when it unpickles a sweep job (hydra/launcher=ray), before it resolves the job's config.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from lifecycle import console, ranking, runner, summary
from lifecycle.config import register_configs
from lifecycle.redact import redact_text

register_configs()


USER_CONF = "conf"  # a folder of the user's own config groups, where the command runs


def with_user_conf(argv: list[str], cwd: Path) -> list[str]:
    """``argv`` (without the program) with ``cwd/conf`` as Hydra's extra config folder, where there is one and no
    ``--config-dir`` was given."""
    own = cwd / USER_CONF
    given = any(a in ("--config-dir", "-cd") or a.startswith("--config-dir=") for a in argv)
    if given or not own.is_dir() or own.resolve() == (Path(__file__).parent / USER_CONF).resolve():
        return list(argv)
    return ["--config-dir", str(own.resolve()), *argv]


def main() -> None:
    """The ``genai-lifecycle`` command."""
    import sys

    import hydra

    sys.argv = [sys.argv[0], *with_user_conf(sys.argv[1:], Path.cwd())]
    shipped = str(Path(__file__).parent / USER_CONF)  # absolute: read as a folder, not as a Python package
    hydra.main(version_base="1.3", config_path=shipped, config_name="config")(execute)()


def enter_launch_folder() -> None:
    """Run where the command was launched. A Ray worker starts in the folder `ray start` ran in; a relative data_dir
    and the prompt files must mean what they meant to the user (Hydra keeps that folder as hydra.runtime.cwd)."""
    from hydra.core.hydra_config import HydraConfig

    launched = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else None
    if launched and launched.is_dir() and launched.resolve() != Path.cwd().resolve():
        os.chdir(launched)


def execute(cfg: DictConfig) -> float | None:
    """Run, print the summary, exit 1 on failure. A job of a sweep returns instead of exiting: its score
    (``ranking.objective``: ``sweep.rank_by[0]``, higher is better), which an optimising sweeper such as Optuna's
    reads, or None where it failed. (Hydra's sweeper would re-raise a job's exception once its batch is done and
    end the sweep before its summary; the failure is in the job's MLflow run, and the sweep exits 1 at its end.)"""
    enter_launch_folder()
    console.configure(cfg.verbose)
    report = runner.run(cfg)
    print(redact_text(summary.render(report, ui_port=cfg.serve.tracking_port)), flush=True)
    if report.failed and report.raises_on_failure:
        raise SystemExit(1)
    return None if report.failed else ranking.objective(report.measured(), cfg.sweep.rank_by)
