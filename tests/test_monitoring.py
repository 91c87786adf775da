"""lifecycle.monitoring, pure: the window a monitor run reads, what a server trace holds, its scores, the run's
metrics and the questions harvested for the next evaluation set."""

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
    scores = [monitoring.trace_scores(monitoring.pair_scores(t, max_chars=20)) for t in traces]
    assert scores[0] == {"non_empty": 1.0, "within_length": 0.0, "answer_relevance": 1.0}
    assert scores[1]["non_empty"] == 0.0 and scores[2] == {}
    metrics = monitoring.summary(traces, scores)
    assert metrics["traces"] == 3 and metrics["errors"] == 1 and metrics["scored"] == 2
    assert (metrics["latency_p50_s"], metrics["latency_p95_s"]) == (2.0, 3.0)
    assert metrics["time_to_first_token_p50_s"] == 0.2 and metrics["output_tokens"] == 24
    assert metrics["feedback_positive_share"] == pytest.approx(2 / 3) and metrics["non_empty/mean"] == 0.5
    assert "feedback_positive_share" not in monitoring.summary([served()], [{}])


def test_a_trace_scores_the_mean_of_its_answers_over_the_values_there_are():
    per_pair = [{"non_empty": 1.0, "guideline": None}, {"non_empty": 0.0, "guideline": 1.0}]
    assert monitoring.trace_scores(per_pair) == {"non_empty": 0.5, "guideline": 1.0}
    assert monitoring.trace_scores([{"guideline": None}]) == {}


LEAST = monitoring.minimums(min_relevance=0.2)


def harvested(traces, known=()):
    per_pair = [monitoring.pair_scores(t, max_chars=200) for t in traces]
    return monitoring.harvest(traces, per_pair, LEAST, known)


def test_harvest_takes_negative_feedback_and_failing_answers_and_nothing_else():
    good = served(trace_id="tr-good", feedback=(True,))
    disliked = served(trace_id="tr-no", pairs=(("What is Python?", "Python is a language."),), feedback=(False,))
    empty = served(trace_id="tr-empty", pairs=(("What is a week?", " "),))
    off_topic = served(trace_id="tr-off", pairs=(("Who wrote Hamlet?", "Bananas are yellow."),))
    found = {h.trace_id: h for h in harvested([good, disliked, empty, off_topic])}
    assert sorted(found) == ["tr-empty", "tr-no", "tr-off"]
    assert found["tr-no"].reasons == ("negative feedback",) and found["tr-no"].question == "What is Python?"
    assert "non_empty 0.00 < 1" in found["tr-empty"].reasons
    assert found["tr-off"].reasons == ("answer_relevance 0.00 < 0.2",)


def test_harvest_deduplicates_keeps_a_correction_and_skips_what_the_set_already_asks():
    q = "What is Python?"
    first = served(trace_id="tr-1", pairs=((q, "A snake."),), feedback=(False,))
    corrected = served(
        trace_id="tr-2", pairs=(("  what is  PYTHON? ", "A snake."),), feedback=(False,), corrected="A language."
    )
    again = served(trace_id="tr-3", pairs=((q, "A snake."),), feedback=(False,))
    (only,) = harvested([first, corrected, again])
    assert (only.trace_id, only.expected_answer) == ("tr-2", "A language.")
    assert harvested([first], known=["what is python?"]) == []


def test_a_batch_with_negative_feedback_gives_all_its_questions_and_no_correction():
    batch = served(
        trace_id="tr-b",
        pairs=(("a question?", "An answer question."), ("b question?", "B question.")),
        feedback=(False,),
        corrected="one answer",
    )
    found = harvested([batch])
    assert [h.question for h in found] == ["a question?", "b question?"]
    assert {h.expected_answer for h in found} == {None}


def test_a_judge_verdict_of_no_fails_an_answer_and_a_missing_one_does_not():
    assert monitoring.failing({"relevance_to_query": 0.0}, LEAST) == ["relevance_to_query 0.00 < 0.5"]
    assert monitoring.failing({"relevance_to_query": None, "answer_relevance": 0.5}, LEAST) == []
