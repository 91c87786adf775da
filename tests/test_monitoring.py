"""lifecycle.monitoring, pure: the window a monitor run reads, what a server trace holds, its scores and the run's
metrics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lifecycle import monitoring

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_the_window_starts_where_it_is_told_or_where_the_last_run_ended_or_a_day_ago():
    assert monitoring.window(None, None, None, NOW) == (NOW - timedelta(hours=24), NOW)
    last = NOW - timedelta(hours=2)
    assert monitoring.window(None, None, last, NOW) == (last, NOW)
    assert monitoring.window("2026-12-01T10:00", "2026-12-01T11:00", last, NOW) == (
        NOW - timedelta(hours=2),
        NOW - timedelta(hours=1),
    )
    epoch = int((NOW - timedelta(hours=3)).timestamp() * 1000)
    assert monitoring.window(str(epoch), None, None, NOW)[0] == NOW - timedelta(hours=3)
    with pytest.raises(ValueError, match="the window is empty"):
        monitoring.window("2026-12-01T13:00", None, None, NOW)


@pytest.mark.parametrize(
    ("inputs", "outputs", "pairs"),
    [
        ({"question": "What is Python?"}, "A language.", (("What is Python?", "A language."),)),
        ({"questions": ["a?", "b?"]}, ["A.", "B."], (("a?", "A."), ("b?", "B."))),
        (
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},
            "Hello.",
            (("Hi?", "Hello."),),
        ),
        ("not recorded (SERVING_TRACE_CONTENT=false)", "not recorded (SERVING_TRACE_CONTENT=false)", ()),
        (None, None, ()),
    ],
)
def test_a_server_trace_gives_its_question_and_answer_pairs(inputs, outputs, pairs):
    assert monitoring.pairs(inputs, outputs) == pairs


def served(pairs=(("What is the capital of France?", "Paris is the capital of France."),), **kw):
    values = {"trace_id": "tr-1", "pairs": pairs, "ok": True, "latency_s": 1.0, "time_to_first_token_s": 0.2}
    return monitoring.Served(**{**values, "input_tokens": 30, "output_tokens": 8, **kw})


def test_scores_and_metrics_of_a_window():
    traces = [
        served(),
        served(pairs=(("What is the capital of France?", ""),), latency_s=3.0, feedback=(False,)),
        served(pairs=(), ok=False, latency_s=2.0, time_to_first_token_s=None, feedback=(True, True)),
    ]
    scores = [monitoring.score(t, max_chars=20) for t in traces]
    assert scores[0] == {"non_empty": 1.0, "within_length": 0.0, "answer_relevance": 1.0}
    assert scores[1]["non_empty"] == 0.0 and scores[2] == {}
    metrics = monitoring.summary(traces, scores)
    assert metrics["traces"] == 3 and metrics["errors"] == 1 and metrics["scored"] == 2
    assert (metrics["latency_p50_s"], metrics["latency_p95_s"]) == (2.0, 3.0)
    assert metrics["time_to_first_token_p50_s"] == 0.2 and metrics["output_tokens"] == 24
    assert metrics["feedback_positive_share"] == pytest.approx(2 / 3) and metrics["non_empty/mean"] == 0.5
    assert "feedback_positive_share" not in monitoring.summary([served()], [{}])
