"""The judges' plumbing (lifecycle.integrations.judges): keys only from the environment, the endpoint checked first,
MLflow's variables set only while judging."""

from __future__ import annotations

import http.server
import os
import threading
from types import SimpleNamespace

import pytest

from devservices.ports import free_port
from lifecycle.integrations import evaluation, judges
from lifecycle.stage import StageError


def judge(**overrides):
    return SimpleNamespace(**{"model": "smollm2", "base_url": None, "key_env": "JUDGE_KEY", **overrides})


@pytest.fixture
def endpoint():
    """A loopback HTTP server that answers 404 to everything: up, but no OpenAI API."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_no_model_means_no_judges():
    assert not judges.enabled(judge(model=None))
    assert [s.name for s in evaluation.scorers(100, judge(model=None), {"concise": "short"})] == [
        "non_empty", "within_length", "fact_agreement", "answer_relevance"
    ]  # fmt: skip


def test_judges_are_correctness_relevance_and_one_per_guideline():
    names = [s.name for s in evaluation.scorers(100, judge(), {"concise": "short", "on_topic": "no detours"})]
    assert names[4:] == ["correctness", "relevance_to_query", "concise", "on_topic"]


def test_a_missing_key_says_which_variable(monkeypatch, endpoint):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    with pytest.raises(StageError, match="needs a key in the environment variable JUDGE_KEY, which is not set"):
        judges.check(judge(base_url=endpoint))


def test_an_endpoint_that_answers_anything_is_up(monkeypatch, endpoint):
    monkeypatch.setenv("JUDGE_KEY", "k" * 12)
    judges.check(judge(base_url=endpoint))  # 404 on /models: it is there


def test_an_unreachable_endpoint_fails_in_seconds_with_what_to_do():
    with pytest.raises(StageError, match=r"cannot be reached .* experiment.judge.model=null"):
        judges.check(judge(base_url=f"http://127.0.0.1:{free_port()}/v1", key_env=None))


def test_the_environment_is_set_while_judging_and_restored(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-123456")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-own-key")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    with judges.environment(judge(base_url="http://127.0.0.1:9/v1/")):
        assert os.environ["OPENAI_API_BASE"] == "http://127.0.0.1:9/v1"
        assert os.environ["OPENAI_API_KEY"] == "sk-judge-123456"
    assert os.environ["OPENAI_API_KEY"] == "sk-users-own-key" and "OPENAI_API_BASE" not in os.environ


def test_what_a_run_records_names_the_endpoint_never_the_key(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-123456")
    recorded = judges.describe(judge(base_url="http://user:pw-secret@judge.internal:8000/v1"))
    assert recorded["judge_model"] == "smollm2" and "pw-secret" not in recorded["judge_endpoint"]
    assert "sk-judge" not in str(recorded)


def test_correctness_gets_the_expected_answer_or_the_facts_never_both():
    q = SimpleNamespace
    rows = evaluation.evaluation_rows(
        ["a", "b"],
        [
            q(question="x?", expected_answer="X.", expected_facts=["x"]),
            q(question="y?", expected_answer=None, expected_facts=["7|seven"]),
        ],
    )
    assert rows[0]["expectations"] == {"fact_patterns": ["x"], "expected_response": "X."}
    assert rows[1]["expectations"] == {"fact_patterns": ["7|seven"], "expected_facts": ["7 or seven"]}
