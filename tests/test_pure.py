"""Pure helpers: scoring, generation settings, prompt text, payload parsing, secret redaction."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from core import generation
from core.model_input import extract_questions
from lifecycle import redact, scoring

DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.1}


class TestScoring:
    def test_fact_agreement_counts_each_fact_once_with_alternatives(self):
        assert scoring.fact_agreement("A week has seven days.", ["7|seven"]) == 1.0
        assert scoring.fact_agreement("Plants use sunlight.", ["plant", "light|sun"]) == 1.0
        assert scoring.fact_agreement("Paris.", ["Paris", "France"]) == 0.5

    def test_numbers_match_whole_numbers_only(self):
        assert scoring.fact_agreement("about 100°C", ["100"]) == 1.0
        assert scoring.fact_agreement("it is 1000 degrees", ["100"]) == 0.0
        assert scoring.fact_agreement("17 days", ["7"]) == 0.0

    def test_relevance_is_the_share_of_question_words_answered(self):
        assert scoring.relevance("What is the capital of France?", "The capital of France is Paris.") == 1.0
        assert scoring.relevance("What is the capital of France?", "I like turtles.") == 0.0

    def test_validate_reports_each_missed_threshold(self):
        thresholds = SimpleNamespace(
            min_non_empty_rate=1.0, max_answer_chars=10, min_fact_agreement=0.75, min_relevance=0.0
        )
        scored = [scoring.score("What is Python?", "", ["language"]), scoring.score("Q?", "x" * 20, [])]
        failures = scoring.validate(scored, thresholds)
        assert any("non-empty rate" in f for f in failures)
        assert any("longer than 10" in f for f in failures)
        assert any("fact agreement" in f for f in failures)
        good = [scoring.score("What is Python?", "A language", ["language"])]
        assert scoring.validate(good, thresholds) == []

    @pytest.mark.parametrize(
        ("value", "number"),
        [("yes", 1.0), (" No ", 0.0), ("maybe", None), (True, 1.0), (0.25, 0.25), (float("nan"), None), (None, None),
         ({"a": 1}, None)],
    )  # fmt: skip
    def test_a_verdict_or_score_reads_as_a_number_or_none(self, value, number):
        assert scoring.as_number(value) == number


class TestGeneration:
    def test_greedy_leaves_out_sampling_knobs(self):
        kwargs = generation.generation_kwargs(generation.merge_settings(DEFAULTS))
        assert kwargs == {"max_new_tokens": 64, "repetition_penalty": 1.1, "do_sample": False}

    def test_temperature_above_zero_samples(self):
        kwargs = generation.generation_kwargs(generation.merge_settings(DEFAULTS, {"temperature": 0.7}))
        assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.7

    @pytest.mark.parametrize(
        "override,message",
        [
            ({"max_new_tokens": 0}, "between 1 and"),
            ({"max_new_tokens": 5000}, "between 1 and"),
            ({"max_new_tokens": "ten"}, "must be a int"),
            ({"temperature": -1}, "temperature must be"),
            ({"top_k": 3}, "unknown generation parameter 'top_k'"),
        ],
    )
    def test_bad_overrides_say_what_is_allowed(self, override, message):
        with pytest.raises(ValueError, match=message):
            generation.merge_settings(DEFAULTS, override)

    def test_none_overrides_keep_defaults(self):
        assert generation.merge_settings(DEFAULTS, {"max_new_tokens": None})["max_new_tokens"] == 64

    def test_templates_convert_to_single_braces(self):
        assert generation.single_brace("Q: {{question}} {json}") == "Q: {question} {{json}}"

    def test_plain_and_eos_prompts(self):
        assert generation.plain_prompt("Be brief.", "{question}") == "Be brief.\n\n{question}\nAnswer:"
        assert generation.eos_turns_prompt("{question}", "<|endoftext|>") == "{question}<|endoftext|>"


class TestPayloads:
    @pytest.mark.parametrize(
        "model_input,expected",
        [
            ("What?", ["What?"]),
            (["a", "b"], ["a", "b"]),
            ({"question": "a"}, ["a"]),
            ({"questions": ["a", "b"]}, ["a", "b"]),
            ([{"question": "a"}, {"question": "b"}], ["a", "b"]),
            (pd.DataFrame({"question": ["a", "b"]}), ["a", "b"]),
            (pd.DataFrame({0: ["a"]}), ["a"]),
            (pd.DataFrame({"questions": [["a", "b"]]}), ["a", "b"]),
        ],
    )
    def test_accepted_shapes(self, model_input, expected):
        assert extract_questions(model_input) == expected

    @pytest.mark.parametrize("bad", [42, {"text": "a"}, [], pd.DataFrame()])
    def test_rejected_shapes_name_the_accepted_ones(self, bad):
        with pytest.raises(ValueError, match="expected a string"):
            extract_questions(bad)


class TestRedact:
    def test_secret_keys_and_env_values_are_masked(self):
        secrets = redact.secret_values({"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "HOME": "/root"})
        tree = {"storage": {"secret_key": "x", "endpoint": "http://u:s3cr3t-value@h"}, "n": 1, "home": "/root"}
        assert redact.redact(tree, secrets) == {
            "storage": {"secret_key": "***", "endpoint": "http://u:***@h"},
            "n": 1,
            "home": "/root",
        }

    def test_only_credential_variables_count_as_secrets(self):
        environ = {"TOKENIZERS_PARALLELISM": "false", "HF_TOKEN": "hf_abcdef", "OPENAI_API_KEY": "sk-123456"}
        assert redact.secret_values(environ) == {"hf_abcdef", "sk-123456"}

    def test_text_redaction(self):
        assert redact.redact_text("token=abcd1234", {"abcd1234"}) == "token=***"
