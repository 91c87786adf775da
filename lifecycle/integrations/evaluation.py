"""Score answers with ``mlflow.genai.evaluate`` using scorers that run offline.

Offline scorers (always): non_empty, within_length, fact_agreement (expected facts found in the answer) and
answer_relevance (question content words the answer mentions), built on ``lifecycle.scoring``. The built-in LLM judges
(Correctness, RelevanceToQuery) are added only when ``experiment.judge_model`` names a judge, so a run without one
never waits on a network call.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
from mlflow.genai.scorers import scorer

from lifecycle import console, scoring


@scorer
def non_empty(outputs: str) -> bool:
    return bool(outputs and outputs.strip())


@scorer
def fact_agreement(outputs: str, expectations: dict) -> float:
    return scoring.fact_agreement(outputs or "", expectations.get("expected_facts") or [])


@scorer
def answer_relevance(inputs: dict, outputs: str) -> float:
    return scoring.relevance(inputs["question"], outputs or "")


def within_length(max_chars: int):
    @scorer(name="within_length")
    def _within_length(outputs: str) -> bool:
        return len(outputs or "") <= max_chars

    return _within_length


def scorers(max_chars: int, judge_model: str | None) -> list:
    chosen = [non_empty, within_length(max_chars), fact_agreement, answer_relevance]
    if judge_model:
        from mlflow.genai.scorers import Correctness, RelevanceToQuery

        chosen += [Correctness(model=judge_model), RelevanceToQuery(model=judge_model)]
    return chosen


def evaluation_rows(answers: Sequence, questions: Sequence) -> list[dict]:
    rows = []
    for answer, q in zip(answers, questions, strict=True):
        expectations = {"expected_facts": list(q.expected_facts)}
        if q.expected_answer:
            expectations["expected_response"] = q.expected_answer
        rows.append({"inputs": {"question": q.question}, "outputs": answer.text, "expectations": expectations})
    return rows


def evaluate(answers: Sequence, questions: Sequence, max_chars: int, judge_model: str | None) -> dict[str, float]:
    with console.library_output_hidden():  # its progress bar and closing banner
        result = mlflow.genai.evaluate(
            data=evaluation_rows(answers, questions), scorers=scorers(max_chars, judge_model)
        )
    return {k: float(v) for k, v in result.metrics.items()}
