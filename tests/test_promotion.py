"""The champion/challenger decision (lifecycle.promotion): pure, so every edge is checked here."""

from __future__ import annotations

from lifecycle import promotion

CHAMPION = {"fact_agreement": 0.75, "answer_relevance": 0.50, "non_empty": 1.0}


def test_equal_scores_promote():
    assert promotion.decide(CHAMPION, dict(CHAMPION), {}, 0.0).promoted


def test_one_lower_score_refuses_and_names_it():
    verdict = promotion.decide(CHAMPION, {**CHAMPION, "answer_relevance": 0.45}, {}, 0.0)
    assert not verdict.promoted
    assert [c.score for c in verdict.losses] == ["answer_relevance"]
    assert verdict.losses[0].describe() == "answer_relevance: 0.45 against 0.50 (-0.05, margin 0.00)"


def test_a_margin_lets_a_small_loss_through_but_not_a_larger_one():
    lower = {**CHAMPION, "answer_relevance": 0.45}
    assert promotion.decide(CHAMPION, lower, {"answer_relevance": 0.05}, 0.0).promoted
    assert promotion.decide(CHAMPION, lower, {}, 0.05).promoted  # the default margin
    assert not promotion.decide(
        CHAMPION, {**CHAMPION, "answer_relevance": 0.44}, {"answer_relevance": 0.05}, 0.0
    ).promoted


def test_a_per_score_margin_wins_over_the_default():
    lower = {**CHAMPION, "fact_agreement": 0.70}
    assert not promotion.decide(CHAMPION, lower, {"fact_agreement": 0.0}, 0.1).promoted


def test_a_score_the_challenger_lacks_refuses():
    challenger = {k: v for k, v in CHAMPION.items() if k != "non_empty"}
    verdict = promotion.decide(CHAMPION, challenger, {}, 0.0)
    assert not verdict.promoted
    assert verdict.losses[0].describe() == "non_empty: the challenger has no score (champion 1.00)"


def test_better_everywhere_promotes_with_a_signed_description():
    verdict = promotion.decide(CHAMPION, {"fact_agreement": 1.0, "answer_relevance": 0.6, "non_empty": 1.0}, {}, 0.0)
    assert verdict.promoted and not verdict.losses
    assert verdict.comparisons[0].describe() == "fact_agreement: 1.00 against 0.75 (+0.25, margin 0.00)"


def test_score_means_keep_only_means():
    metrics = {"fact_agreement/mean": 0.5, "latency/p50": 3.0, "correctness/mean": 1.0}
    means = promotion.score_means(metrics)
    assert means == {"fact_agreement": 0.5, "correctness": 1.0}
    assert list(means) == ["correctness", "fact_agreement"]  # by name, whatever order MLflow listed them in


def test_unknown_margins_are_named():
    assert promotion.unknown_margins({"relevence": 0.1, "fact_agreement": 0.0}, set(CHAMPION)) == ["relevence"]


def test_table_rows_pair_both_answers_per_question():
    rows = promotion.table_rows(
        ["q1", "q2"],
        {
            "champion": ("1", ["a1", "a2"], [{"s": 1.0}, {"s": 0.0}]),
            "challenger": ("2", ["b1", "b2"], [{"s": 0.5}, {"s": None}]),
        },
    )
    assert rows[1] == {
        "question": "q2",
        "champion_version": "1",
        "champion_answer": "a2",
        "champion/s": 0.0,
        "challenger_version": "2",
        "challenger_answer": "b2",
        "challenger/s": None,
    }


def test_chart_draws_every_score():
    verdict = promotion.decide(CHAMPION, {**CHAMPION, "answer_relevance": 0.1}, {}, 0.0)
    figure = promotion.chart({"champion": "1", "challenger": "2"}, verdict)
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_yticklabels()] == list(CHAMPION)
    assert axes.get_title() == "challenger version 2 refused against version 1"
