"""Score answers with ``mlflow.genai.evaluate`` using scorers that run offline.

Offline scorers (always): non_empty, within_length, fact_agreement (expected facts found in the answer) and
answer_relevance (question content words the answer mentions), built on ``lifecycle.scoring``. MLflow's LLM judges
(``lifecycle.integrations.judges``) are added only when ``experiment.judge.model`` names one, so a run without one
never waits on a network call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mlflow
from mlflow.genai.scorers import scorer

from lifecycle import console, scoring
from lifecycle.integrations import judges


@scorer
def non_empty(outputs: str) -> bool:
    return bool(outputs and outputs.strip())


FACT_PATTERNS = "fact_patterns"  # conf/eval's expected_facts ("7|seven"): MLflow's Correctness reads expected_facts


@scorer
def fact_agreement(outputs: str, expectations: dict) -> float:
    return scoring.fact_agreement(outputs or "", expectations.get(FACT_PATTERNS) or [])


@scorer
def answer_relevance(inputs: dict, outputs: str) -> float:
    return scoring.relevance(inputs["question"], outputs or "")


def within_length(max_chars: int):
    @scorer(name="within_length")
    def _within_length(outputs: str) -> bool:
        return len(outputs or "") <= max_chars

    return _within_length


def scorers(max_chars: int, judge=None, guidelines: Mapping[str, str] | None = None) -> list:
    chosen = [non_empty, within_length(max_chars), fact_agreement, answer_relevance]
    if judges.enabled(judge):
        chosen += judges.scorers(judge, guidelines or {})
    return chosen


def evaluation_rows(answers: Sequence[str], questions: Sequence) -> list[dict]:
    """One row per answer. The Correctness judge takes the expected answer, or else the expected facts (never
    both: it refuses that); the fact_agreement scorer reads the facts as patterns under its own key."""
    rows = []
    for answer, q in zip(answers, questions, strict=True):
        expectations: dict = {FACT_PATTERNS: list(q.expected_facts)}
        if q.expected_answer:
            expectations["expected_response"] = q.expected_answer
        elif q.expected_facts:
            expectations["expected_facts"] = [fact.replace("|", " or ") for fact in q.expected_facts]
        rows.append({"inputs": {"question": q.question}, "outputs": answer, "expectations": expectations})
    return rows


@dataclass(frozen=True)
class Scores:
    """What ``mlflow.genai.evaluate`` made of a set of answers: its metrics ("<scorer>/mean") and, per question in
    the order asked, each scorer's value (booleans as 0/1; None where a scorer failed on that row)."""

    metrics: dict[str, float]
    per_question: list[dict[str, float | None]]


def evaluate(
    answers: Sequence[str], questions: Sequence, max_chars: int, judge=None, guidelines: Mapping[str, str] | None = None
) -> Scores:
    """Score ``answers`` to ``questions`` with the offline scorers, and the judges when ``judge`` names a model."""
    chosen = scorers(max_chars, judge, guidelines)
    judging = judges.environment(judge) if judges.enabled(judge) else contextlib.nullcontext()
    with console.library_output_hidden(), judging:  # its progress bar and closing banner; the judges' endpoint
        result = mlflow.genai.evaluate(data=evaluation_rows(answers, questions), scorers=chosen)
    names = [s.name for s in chosen]
    by_question: dict[str, dict[str, float | None]] = {}
    for _, row in result.result_df.iterrows():
        request = row["request"]
        question = request.get("question") if isinstance(request, dict) else str(request)
        by_question[question] = {n: scoring.as_number(row.get(f"{n}/value")) for n in names}
    return Scores(
        metrics={k: float(v) for k, v in result.metrics.items()},
        per_question=[by_question.get(q.question, dict.fromkeys(names)) for q in questions],
    )
