"""What ``main.py`` does with a composed config: run it, print the summary, exit non-zero on failure."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from lifecycle import runner, summary
from lifecycle.redact import redact_text


def quiet_libraries() -> None:
    for name in ("mlflow", "alembic", "urllib3", "httpx", "transformers", "langchain"):
        logging.getLogger(name).setLevel(logging.WARNING)


def execute(cfg: DictConfig) -> int:
    quiet_libraries()
    report = runner.run(cfg)
    print(redact_text(summary.render(report, ui_port=cfg.serve.tracking_port)), flush=True)
    if report.failed:
        raise SystemExit(1)
    return 0
