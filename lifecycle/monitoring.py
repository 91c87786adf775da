"""What ``mode=monitor`` makes of the served model's production traces, without MLflow: pure, unit-tested.

- ``window``: the time span to read, from ``monitor.since``/``monitor.until`` or else since the last monitor run;
- ``Served``: one trace's question/answer pairs, status, latency, time to first token, tokens and feedback, out of
  what the server recorded (``serving.http.tracing``: ``question``, ``questions`` or ``messages`` in, the answer out);
- ``summary``: counts, latency and time-to-first-token percentiles, token totals and the share of positive
  feedback, as the monitor run's metrics;
- ``pair_scores`` and ``trace_scores``: the offline scores that need no expected answer (non-empty, within length,
  relevance), per answer and per trace;
- ``harvest``: the questions that make the next evaluation set: negative feedback or a score below its minimum,
  deduplicated, each with the trace it came from and the corrected answer feedback gave.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from lifecycle import scoring

DEFAULT_LOOKBACK = timedelta(hours=24)  # the first monitor run, with no window given, reads the last day
PASSING = 0.5  # a score with no minimum of its own (a judge's yes/no, as 1/0) fails below this


def parse_time(value: str | int | float) -> datetime:
    """An ISO 8601 time (``2026-12-01T10:00``, UTC unless it says) or epoch milliseconds; ValueError otherwise."""
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or str(value).isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def window(since, until, last_until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): ``since`` or where the last monitor run ended or a day ago; ``until`` or now."""
    end = parse_time(until) if until is not None else now
    start = parse_time(since) if since is not None else (last_until or end - DEFAULT_LOOKBACK)
    if start >= end:
        raise ValueError(f"the window is empty: it starts {start.isoformat()} and ends {end.isoformat()}")
    return start, end


@dataclass(frozen=True)
class Served:
    """One production trace, as the monitor reads it."""

    trace_id: str
    pairs: tuple[tuple[str, str], ...]  # (question, answer); empty where the trace holds no text
    ok: bool
    latency_s: float | None
    time_to_first_token_s: float | None
    input_tokens: int
    output_tokens: int
    feedback: tuple[bool, ...] = field(default=())  # yes/no feedback on it
    corrected: str | None = None  # the answer feedback said was right (its expected_response), if any


def pairs(inputs: Any, outputs: Any) -> tuple[tuple[str, str], ...]:
    """The question/answer pairs a server trace holds (none when its content was not recorded)."""
    if not isinstance(inputs, Mapping):
        return ()
    if isinstance(inputs.get("question"), str) and isinstance(outputs, str):
        return ((inputs["question"], outputs),)
    if isinstance(inputs.get("questions"), list) and isinstance(outputs, list):
        return tuple((q, a) for q, a in zip(inputs["questions"], outputs, strict=False) if isinstance(a, str))
    messages = inputs.get("messages")
    if isinstance(messages, list) and isinstance(outputs, str):
        users = [m.get("content") for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return ((users[-1], outputs),)
    return ()


def pair_scores(served: Served, max_chars: int) -> list[dict[str, float]]:
    """Each answer's offline scores, in the order of ``served.pairs`` (none when the trace holds no text)."""
    return [
        {
            "non_empty": float(bool(answer.strip())),
            "within_length": float(len(answer) <= max_chars),
            "answer_relevance": scoring.relevance(question, answer),
        }
        for question, answer in served.pairs
    ]


def trace_scores(per_pair: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
    """A trace's scores: each the mean over its answers of the values there are (a judge that failed gives None)."""
    out = {}
    for name in sorted({name for scores in per_pair for name in scores}):
        values = [scores[name] for scores in per_pair if scores.get(name) is not None]
        if values:
            out[name] = sum(values) / len(values)
    return out


def minimums(min_relevance: float) -> dict[str, float]:
    """The least each offline score must be for one answer to pass (the test stage's thresholds, per answer)."""
    return {"non_empty": 1.0, "within_length": 1.0, "answer_relevance": min_relevance}


def failing(scores: Mapping[str, float | None], least: Mapping[str, float]) -> list[str]:
    """The scores of one answer below their minimum (``PASSING`` for a score that has none)."""
    return [
        f"{name} {value:.2f} < {least.get(name, PASSING):g}"
        for name, value in sorted(scores.items())
        if value is not None and value < least.get(name, PASSING)
    ]


@dataclass(frozen=True)
class Harvested:
    """A production question for the evaluation set: where it came from, why, and what the answer should have been."""

    question: str
    trace_id: str
    reasons: tuple[str, ...]
    expected_answer: str | None = None


def normalized(question: str) -> str:
    return " ".join(question.casefold().split())


def harvest(
    traces: Sequence[Served],
    per_pair: Sequence[Sequence[Mapping[str, float | None]]],
    least: Mapping[str, float],
    known: Sequence[str] = (),
) -> list[Harvested]:
    """The questions with negative feedback or a failing score, oldest first, none already in ``known`` (the
    evaluation set's questions) and each once (compared with case and spacing ignored). Of one question asked more
    than once, the first trace whose feedback corrected the answer is kept, else the first."""
    chosen: dict[str, Harvested] = {}
    seen = {normalized(q) for q in known}
    for served, scores in zip(traces, per_pair, strict=True):
        negative = ["negative feedback"] if False in served.feedback else []
        corrected = served.corrected if len(served.pairs) == 1 else None  # a batch's correction names no answer
        for (question, _), pair in zip(served.pairs, scores, strict=True):
            reasons = negative + failing(pair, least)
            key = normalized(question)
            if not reasons or not key or key in seen:
                continue
            found = Harvested(question, served.trace_id, tuple(reasons), corrected)
            if key not in chosen or (chosen[key].expected_answer is None and corrected is not None):
                chosen[key] = found
    return list(chosen.values())


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1), or None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def summary(traces: Sequence[Served], scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The monitor run's metrics; a figure with nothing to measure is left out."""
    latencies = [t.latency_s for t in traces if t.latency_s is not None]
    ttfts = [t.time_to_first_token_s for t in traces if t.time_to_first_token_s is not None]
    feedback = [value for t in traces for value in t.feedback]
    metrics: dict[str, float | None] = {
        "traces": len(traces),
        "errors": sum(not t.ok for t in traces),
        "scored": sum(bool(s) for s in scores),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "time_to_first_token_p50_s": percentile(ttfts, 0.5),
        "time_to_first_token_p95_s": percentile(ttfts, 0.95),
        "input_tokens": sum(t.input_tokens for t in traces),
        "output_tokens": sum(t.output_tokens for t in traces),
        "feedback": len(feedback),
        "feedback_positive_share": sum(feedback) / len(feedback) if feedback else None,
    }
    for name in sorted({name for s in scores for name in s}):
        values = [s[name] for s in scores if name in s]
        metrics[f"{name}/mean"] = sum(values) / len(values)
    return {k: float(v) for k, v in metrics.items() if v is not None}
