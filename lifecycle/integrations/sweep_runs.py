"""A sweep's MLflow side: its run, the once-per-sweep preparation, its jobs' runs, and the verdict
(see lifecycle.sweeps).

``start(cfg)`` checks the store, converts the model if it has not been yet, registers every usable prompt template,
switches an SQLite backend to WAL, and opens the sweep's run. Jobs then find all of that ready: none converts,
registers or creates the experiment in parallel with another. ``finish(cfg, run_id, sweep_id)`` ranks the jobs'
runs and logs the verdict: a table (``sweep/summary.json``, ``sweep/summary.txt``), a bar chart of the main score
(``sweep/scores.png``), the best job, and the ``best`` alias moved to the winning prompt's version.

A job's runs go through ``SweepJobSession``: each stage run is a direct child of the sweep's run, described like a
parent would be and tagged with the sweep, the job and its overrides, so the sweep's children are the jobs.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from omegaconf import DictConfig, OmegaConf

from lifecycle import ranking, tags
from lifecycle.config import to_container
from lifecycle.integrations import datasets, prompts, tracking
from lifecycle.redact import redact
from lifecycle.stage import StageResult
from lifecycle.sweep_job import SweepJob

log = logging.getLogger(__name__)

TABLE = "sweep/summary.json"
TEXT = "sweep/summary.txt"
CHART = "scores.png"


@dataclass
class Summary:
    text: str
    jobs: int
    failed: int
    best: ranking.Row | None
    chart: Path | None


def _without_hydra(cfg: DictConfig) -> dict:
    return to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]))


def use_wal(tracking_uri: str) -> None:
    """SQLite in write-ahead-log mode: parallel jobs (hydra/launcher=joblib) queue for the write lock instead of
    failing with "database is locked". The mode is stored in the database file."""
    if tracking_uri.startswith("sqlite:///"):
        with sqlite3.connect(tracking_uri.removeprefix("sqlite:///"), timeout=30) as db:
            db.execute("PRAGMA journal_mode=WAL")


def start(cfg: DictConfig) -> tuple[str, str]:
    from lifecycle.config_groups import group_options
    from lifecycle.integrations.models import resolve_model_folder

    session = tracking.TrackingSession.open(cfg)
    use_wal(cfg.tracking_uri)
    resolve_model_folder(cfg.model, cfg.paths.model_cache)  # converted here, once, not by parallel jobs
    for prompt_cfg in prompts.usable(list(group_options(cfg, "prompt").values())):
        prompts.register(prompt_cfg)
    if not cfg.eval.dataset:  # synced here, once: parallel jobs would each create a dataset of the same name
        datasets.synced(datasets.PREFIX + cfg.eval.name, cfg.eval.questions, session.experiment_id)
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    overrides = " ".join(cfg.hydra.overrides.task)
    run_tags = {tags.MODE: "sweep", tags.SWEEP_ID: sweep_id, tags.OVERRIDES: overrides, tags.STATUS: "running"}
    client = mlflow.MlflowClient()
    run_id = client.create_run(session.experiment_id, run_name=f"sweep-{sweep_id}", tags=run_tags).info.run_id
    resolved = redact(_without_hydra(cfg))
    client.log_text(run_id, yaml.safe_dump(resolved, sort_keys=False), tracking.CONFIG_ARTIFACT)
    return run_id, sweep_id


def _version(prompt_uri: str | None) -> int | None:
    tail = (prompt_uri or "").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def rows(runs: list) -> list[ranking.Row]:
    """One row per job (a job of a multi-stage mode has a run per stage: their metrics are merged)."""
    by_job: dict[int, list] = defaultdict(list)
    for run in runs:
        if tags.SWEEP_JOB in run.data.tags:  # the sweep's own run carries the sweep's tag too
            by_job[int(run.data.tags[tags.SWEEP_JOB])].append(run)
    jobs = sorted(by_job)
    labels = ranking.labels([by_job[job][0].data.tags.get(tags.OVERRIDES, "").split() for job in jobs])
    result = []
    for job, label in zip(jobs, labels, strict=True):
        metrics, params = {}, {}
        for run in by_job[job]:
            metrics.update(run.data.metrics)
            params.update(run.data.params)
        failed = [r for r in by_job[job] if r.info.status != "FINISHED"]
        result.append(
            ranking.Row(
                job=job,
                label=label,
                status="failed" if failed else "completed",
                prompt=params.get("prompt"),
                prompt_version=_version(params.get("prompt_uri")),
                metrics=metrics,
                error=failed[0].data.tags.get(tags.ERROR, "failed") if failed else None,
                run_id=by_job[job][0].info.run_id,
            )
        )
    return result


def chart(ranked: list[ranking.Row], metric: str, title: str, path: Path) -> Path:
    """A horizontal bar per job on the main score: the best one highlighted, failed ones marked."""
    from matplotlib.figure import Figure

    shown = list(reversed(ranked))  # best on top
    figure = Figure(figsize=(8, 1.2 + 0.5 * len(shown)), layout="constrained")
    axes = figure.add_subplot()
    values = [0.0 if row.failed else row.metrics.get(metric, 0.0) for row in shown]
    colours = ["#bbbbbb" if row.failed else "#4c72b0" for row in shown]
    if ranked and not ranked[0].failed:
        colours[-1] = "#dd8452"
    bars = axes.barh([row.label for row in shown], values, color=colours)
    for bar, row in zip(bars, shown, strict=True):
        axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            " failed" if row.failed else f" {bar.get_width():.2f}",
            va="center",
        )
    axes.set_xlim(0, max([*values, 1e-9]) * 1.15)  # room for the value labels
    axes.set_xlabel(metric)
    axes.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def finish(cfg: DictConfig, run_id: str, sweep_id: str) -> Summary:
    tracking.use_backend(cfg.tracking_uri)
    tracking.flush_traces()  # the jobs that ran in this process left theirs to the end
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{tags.SWEEP_ID}` = '{sweep_id}'", max_results=5000)
    rank_by = list(cfg.sweep.rank_by)
    ranked = ranking.rank(rows(runs), rank_by)
    winner = ranking.best(ranked)
    failed = sum(row.failed for row in ranked)
    table = ranking.render(ranked, rank_by)
    client.log_table(run_id, ranking.columns(ranked, rank_by), TABLE)
    client.log_text(run_id, table + "\n", TEXT)
    main = ranking.key(rank_by[0])[0]
    figure = chart(ranked, main, f"sweep {sweep_id}: {main}", Path(cfg.hydra.sweep.dir) / CHART) if ranked else None
    if figure:
        client.log_artifact(run_id, str(figure), "sweep")
    lines = [f"sweep {sweep_id}: {len(ranked)} jobs, {failed} failed, ranked by {', '.join(rank_by)}", table]
    if winner:
        lines.append(f"best: job {winner.job} ({winner.label}), {main} {winner.metrics.get(main, float('nan')):.2f}")
        client.set_tag(run_id, tags.SWEEP_BEST, f"job {winner.job}: {winner.label}")
        client.log_metric(run_id, f"best/{main}", winner.metrics.get(main, float("nan")))
        if winner.prompt and winner.prompt_version:
            mlflow.genai.set_prompt_alias(winner.prompt, alias=cfg.sweep.best_alias, version=winner.prompt_version)
            lines.append(f"prompt alias {cfg.sweep.best_alias!r} -> prompts:/{winner.prompt}/{winner.prompt_version}")
    client.log_metric(run_id, "jobs", len(ranked))
    client.log_metric(run_id, "failed_jobs", failed)
    client.set_tag(run_id, tags.STATUS, "failed" if failed or not ranked else "success")
    client.set_terminated(run_id, "FAILED" if failed or not ranked else "FINISHED")
    if figure:
        lines.append(f"chart: {figure} (and in the sweep's run, {run_id})")
    return Summary("\n".join(lines), len(ranked), failed, winner, figure)


class SweepJobSession(tracking.TrackingSession):
    """The runs of one job of a sweep: no parent of its own (the sweep's run is), each stage run tagged with the
    job; its wall time on every run; a failure returns 1 instead of raising, so the sweep goes on to its verdict."""

    raises_on_failure = False

    def __init__(self, cfg: DictConfig, job: SweepJob) -> None:
        super().__init__(cfg)
        self.job = job

    @classmethod
    def open(cls, cfg: DictConfig, job: SweepJob) -> SweepJobSession:
        # the sweep checked the store once, before its first job
        tracking.ensure_local_dirs(cfg)
        tracking.use_backend(cfg.tracking_uri)
        return cls(cfg, job)

    @contextlib.contextmanager
    def parent_run(self) -> Iterator[str]:
        try:
            yield self.job.run_id  # the sweep opened its run and closes it
        finally:
            if not self.job.in_sweep_process:
                tracking.flush_traces()  # a worker process: its traces must be out before it goes (~1 s)
        # in the sweep's own process, the sweep's end flushes every job's traces at once

    def start_stage_run(self, name: str):
        run_tags = {tags.STAGE: name, "mlflow.parentRunId": self.job.run_id, **self.job.tags()}
        run = mlflow.start_run(run_name=f"{name}-job{self.job.num}", tags=run_tags)
        self.describe()
        return run

    def finish(self, report: Any, seconds: float) -> None:
        """The job's wall time (imports and model load included) on each of its runs; the sweep's end marks the
        sweep's run."""
        for result in report.results:
            if result.run_id:
                mlflow.MlflowClient().log_metric(result.run_id, "job_s", seconds)

    def record_failure_before_stages(self, report: Any, seconds: float) -> None:
        """A job that failed before its first stage still gets a (failed) run, so the sweep's summary shows why."""
        name = self.cfg.mode.stages[0] if self.cfg.mode.stages else self.cfg.mode.name
        with self.stage_run(name) as stage_run:
            result = StageResult(stage=name, status="failed", error=report.error)
            result.run_id = stage_run.run_id
            stage_run.finish(result)
        report.results.append(result)
        self.finish(report, seconds)
