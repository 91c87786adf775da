"""Offline answer scoring: pure functions shared by the experiment's scorers and the test stage's validation.

- relevance: share of the question's content words that the answer mentions (a cheap, deterministic proxy);
- fact agreement: share of expected facts found in the answer ("7|seven" accepts either spelling);
- validate: the thresholds from conf/eval applied to a set of answers, as human-readable failures;
- as_number: a scorer's or judge's value as a number (yes 1, no 0), or None where it gave none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how in is it of on or the there to was what when where which who "
    "whom why with you your".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS}


def relevance(question: str, answer: str) -> float:
    wanted = content_words(question)
    if not wanted:
        return 1.0
    return len(wanted & content_words(answer)) / len(wanted)


def as_number(value) -> float | None:
    """A score as a number: yes/no (a judge's verdict) as 1/0, booleans and numbers as floats; None for a missing,
    NaN or unreadable value."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"yes": 1.0, "no": 0.0}.get(value.strip().lower())
    try:
        number = float(value)  # numpy's booleans and numbers too
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _mentions(answer: str, alternative: str) -> bool:
    alt = alternative.strip().lower()
    if not alt:
        return False
    pattern = re.escape(alt)
    if alt[0].isalnum():
        pattern = r"\b" + pattern
    if alt[-1].isalnum() and not alt[-1].isdigit():
        pattern += r"\w*"  # "plant" matches "plants"
    elif alt[-1].isdigit():
        pattern += r"(?![0-9])"
    return re.search(pattern, answer.lower()) is not None


def fact_agreement(answer: str, facts: Sequence[str]) -> float:
    if not facts:
        return 1.0
    hits = sum(any(_mentions(answer, alt) for alt in fact.split("|")) for fact in facts)
    return hits / len(facts)


@dataclass(frozen=True)
class ScoredAnswer:
    question: str
    answer: str
    relevance: float
    fact_agreement: float
    chars: int

    @property
    def non_empty(self) -> bool:
        return bool(self.answer.strip())


def score(question: str, answer: str, facts: Sequence[str]) -> ScoredAnswer:
    return ScoredAnswer(question, answer, relevance(question, answer), fact_agreement(answer, facts), len(answer))


def summarize(scored: Sequence[ScoredAnswer]) -> dict[str, float]:
    n = max(len(scored), 1)
    return {
        "non_empty_rate": sum(s.non_empty for s in scored) / n,
        "fact_agreement_mean": sum(s.fact_agreement for s in scored) / n,
        "relevance_mean": sum(s.relevance for s in scored) / n,
        "answer_chars_max": float(max((s.chars for s in scored), default=0)),
    }


def validate(scored: Iterable[ScoredAnswer], thresholds) -> list[str]:
    """Every threshold a set of answers misses, worded for the person reading the run's output."""
    scored = list(scored)
    summary = summarize(scored)
    failures = []
    if summary["non_empty_rate"] < thresholds.min_non_empty_rate:
        empty = [s.question for s in scored if not s.non_empty]
        failures.append(
            f"non-empty rate {summary['non_empty_rate']:.2f} < {thresholds.min_non_empty_rate} (empty: {empty})"
        )
    too_long = [s.question for s in scored if s.chars > thresholds.max_answer_chars]
    if too_long:
        failures.append(f"answers longer than {thresholds.max_answer_chars} chars: {too_long}")
    if summary["fact_agreement_mean"] < thresholds.min_fact_agreement:
        failures.append(f"mean fact agreement {summary['fact_agreement_mean']:.2f} < {thresholds.min_fact_agreement}")
    if summary["relevance_mean"] < thresholds.min_relevance:
        failures.append(f"mean relevance {summary['relevance_mean']:.2f} < {thresholds.min_relevance}")
    return failures
