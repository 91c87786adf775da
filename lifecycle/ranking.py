"""A sweep's jobs side by side, ranked (pure: rows in, ranking and text out).

``rank_by`` lists metric names, the first being the main score; a leading ``-`` means lower is better, e.g.
``[fact_agreement/mean, answer_relevance/mean, -latency_mean_s]``. Completed jobs are ranked by those keys in turn
(a missing metric ranks last). Failed jobs follow them, in job order, with their error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SCORE_SUFFIX = "/mean"
SHOWN = ("latency_mean_s", "tokens_per_s", "job_s")


@dataclass
class Row:
    job: int
    label: str  # what sets this job apart from the others, e.g. "prompt=detailed"
    status: str  # "completed" | "failed"
    prompt: str | None = None
    prompt_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.status != "completed"


def key(name: str) -> tuple[str, int]:
    """("metric", +1 when higher is better, -1 when lower is) for an entry of rank_by."""
    return (name[1:], -1) if name.startswith("-") else (name, 1)


def rank(rows: Sequence[Row], rank_by: Sequence[str]) -> list[Row]:
    def order(row: Row) -> tuple:
        values = []
        for metric, sign in map(key, rank_by):
            value = row.metrics.get(metric)
            values.append(math.inf if value is None or math.isnan(value) else -sign * value)
        return (*values, row.job)

    done = sorted((r for r in rows if not r.failed), key=order)
    return done + sorted((r for r in rows if r.failed), key=lambda r: r.job)


def objective(metrics: Mapping[str, float], rank_by: Sequence[str]) -> float | None:
    """A job's score for an optimising sweeper (Hydra's Optuna sweeper, ``direction: maximize``): the main score,
    ``rank_by[0]``, negated where lower is better, so that higher always wins. None where the job has none (it
    failed, or did not measure it): the sweeper marks that trial failed."""
    metric, sign = key(rank_by[0])
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    return sign * float(value)


def best(ranked: Sequence[Row]) -> Row | None:
    return next((row for row in ranked if not row.failed), None)


def labels(overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each job's overrides less those every job shares (what the sweep varies), or all of them when none differ."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [" ".join(o for o in job if o not in common) or " ".join(job) or "(defaults)" for job in overrides]


def score_names(rows: Sequence[Row], rank_by: Sequence[str]) -> list[str]:
    ranked = [key(name)[0] for name in rank_by]
    scores = sorted({m for row in rows for m in row.metrics if m.endswith(SCORE_SUFFIX)} - set(ranked))
    return [*ranked, *scores]


def columns(ranked: Sequence[Row], rank_by: Sequence[str]) -> dict[str, list]:
    """The table as columns (MLflow's log_table format)."""
    scores = score_names(ranked, rank_by)
    metrics = [*scores, *(m for m in SHOWN if m not in scores)]
    table: dict[str, list] = {"rank": [], "job": [], "label": [], "prompt": [], "version": [], "status": []}
    table.update({metric: [] for metric in metrics})
    table["error"] = []
    for position, row in enumerate(ranked, start=1):
        table["rank"].append(None if row.failed else position)
        table["job"].append(row.job)
        table["label"].append(row.label)
        table["prompt"].append(row.prompt)
        table["version"].append(row.prompt_version)
        table["status"].append(row.status)
        for metric in metrics:
            table[metric].append(row.metrics.get(metric))
        table["error"].append(row.error)
    return table


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if not math.isnan(value) else "-"
    return str(value)


def render(ranked: Sequence[Row], rank_by: Sequence[str], max_error: int = 70) -> str:
    table = columns(ranked, rank_by)
    error = table.pop("error")
    names = list(table)
    cells = [[_cell(v) for v in table[name]] for name in names]
    widths = [max(len(name), *(len(c) for c in column)) for name, column in zip(names, cells, strict=True)]
    lines = ["  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True))]
    for i in range(len(ranked)):
        lines.append("  ".join(column[i].ljust(width) for column, width in zip(cells, widths, strict=True)))
        if error[i]:
            lines.append(f"    error: {error[i][:max_error]}{'...' if len(error[i]) > max_error else ''}")
    return "\n".join(line.rstrip() for line in lines)
