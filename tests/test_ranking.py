"""Ranking a sweep's jobs (lifecycle.ranking) and the template check (core.generation.check_template)."""

from __future__ import annotations

import math

import pytest

from core.generation import check_template
from lifecycle.ranking import Row, best, columns, labels, objective, rank, render

RANK_BY = ["fact_agreement/mean", "answer_relevance/mean", "-latency_mean_s"]


def row(job: int, facts: float | None, relevance: float, latency: float, status: str = "completed", **kw) -> Row:
    metrics = {"answer_relevance/mean": relevance, "latency_mean_s": latency, "non_empty/mean": 1.0}
    if facts is not None:
        metrics["fact_agreement/mean"] = facts
    return Row(
        job=job,
        label=f"prompt=p{job}",
        status=status,
        prompt=f"qa-p{job}",
        prompt_version=job + 1,
        metrics=metrics,
        **kw,
    )


def test_the_main_score_decides_then_the_tie_breakers_in_order():
    rows = [row(0, 0.9, 0.8, 1.0), row(1, 1.0, 0.7, 2.0), row(2, 1.0, 0.9, 3.0), row(3, 1.0, 0.9, 1.5)]
    assert [r.job for r in rank(rows, RANK_BY)] == [3, 2, 1, 0]  # ties on facts and relevance: lower latency wins


def test_failed_jobs_and_missing_scores_rank_last():
    rows = [row(0, None, 0.9, 1.0), row(1, 0.5, 0.1, 9.0), row(2, 1.0, 1.0, 1.0, status="failed", error="boom")]
    ranked = rank(rows, RANK_BY)
    assert [r.job for r in ranked] == [1, 0, 2]
    assert best(ranked).job == 1 and best([rows[2]]) is None


def test_labels_keep_only_what_the_sweep_varies():
    jobs = [["mode=experiment", "prompt=a"], ["mode=experiment", "prompt=b"]]
    assert labels(jobs) == ["prompt=a", "prompt=b"]
    assert labels([["mode=experiment"]]) == ["mode=experiment"]


def test_the_table_shows_ranks_scores_and_errors():
    ranked = rank([row(0, 1.0, 0.9, 1.0), row(1, 1.0, 0.9, 1.0, status="failed", error="prompt 'x': broken")], RANK_BY)
    table = columns(ranked, RANK_BY)
    assert table["rank"] == [1, None] and table["status"] == ["completed", "failed"]
    assert list(table)[6:9] == [*RANK_BY[:2], "latency_mean_s"]
    text = render(ranked, RANK_BY)
    assert "error: prompt 'x': broken" in text and text.splitlines()[1].startswith("1 ")


@pytest.mark.parametrize("template", ["Q: {{question}}", "Use {json} for {{question}}", "{{question}}"])
def test_usable_templates(template):
    check_template(template)


@pytest.mark.parametrize(
    "template,message",
    [
        ("Answer briefly.", "must contain {{question}}"),
        ("Q: {{question}", "must contain {{question}}"),
        ("{{question}} in {{language}}", "only {{question}} is filled in"),
    ],
)
def test_broken_templates_say_why(template, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_template(template)


@pytest.mark.parametrize(
    ("metrics", "rank_by", "expected"),
    [
        ({"fact_agreement/mean": 0.75, "latency_mean_s": 2.0}, ["fact_agreement/mean", "-latency_mean_s"], 0.75),
        ({"latency_mean_s": 2.0}, ["-latency_mean_s"], -2.0),  # lower is better: negated, so higher still wins
        ({"latency_mean_s": 2.0}, ["fact_agreement/mean"], None),  # not measured: the trial failed
        ({"fact_agreement/mean": math.nan}, ["fact_agreement/mean"], None),
    ],
)
def test_a_jobs_objective_is_its_main_score_with_higher_always_better(metrics, rank_by, expected):
    assert objective(metrics, rank_by) == expected
