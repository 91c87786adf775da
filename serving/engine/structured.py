"""Structured output: ``response_format`` (``json_object``, ``json_schema``) enforced while decoding.

A request's JSON schema is compiled by llguidance (the grammar engine vLLM, SGLang and llama.cpp use) into a matcher
that, before each step, says which tokens may come next; the row's logits outside that set are masked, so even a
135M-parameter model answers JSON that parses and validates. Each constrained request is one row of the continuous
batch with its own matcher: the other rows are untouched. A schema the engine cannot enforce (look-arounds in a
pattern, an external ``$ref``, keywords it does not implement) is refused before decoding, with the engine's reason.

Whitespace between JSON tokens is not allowed (``whitespace_flexible: false``): a small model otherwise pads the
object with newlines until it runs out of tokens.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

JSON_OBJECT_SCHEMA = {"type": "object"}
GRAMMAR_OPTIONS = {"whitespace_flexible": False}
BITS = torch.arange(32, dtype=torch.int32)


class Unenforceable(ValueError):
    """A response_format whose schema the grammar engine cannot enforce; the message says why."""


def requested_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a response_format asks for: None for text (or none given)."""
    if not response_format or response_format["type"] == "text":
        return None
    if response_format["type"] == "json_object":
        return JSON_OBJECT_SCHEMA
    return response_format["json_schema"]["schema"]


class JsonConstraint:
    """One row's grammar state: the tokens allowed next, advanced by each token the row takes."""

    def __init__(self, matcher, vocab_size: int) -> None:
        import llguidance.torch

        self.matcher = matcher
        self.vocab_size = vocab_size
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

    def allowed(self) -> torch.Tensor:
        """A boolean mask over the vocabulary: the tokens the grammar accepts next (end-of-sequence only once the
        JSON is complete)."""
        import llguidance.torch

        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        return ((self.bitmask[0, :, None] >> BITS) & 1).view(-1)[: self.vocab_size].bool()

    def consume(self, token: int) -> bool:
        """Advance by the token the row took; True once the JSON is complete and nothing may follow it (or the
        matcher failed: the row must end either way)."""
        self.matcher.consume_token(token)
        return self.matcher.is_stopped() or self.matcher.is_error()


class Grammars:
    """Compiles response formats for one model's tokenizer (its adapter is built on first use: about 0.3 s)."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size  # the logits' width (serving.engine.decoding.vocab_size)
        self._adapter = None
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, loaded) -> Grammars:
        """For a loaded model (``core.model_folder.LoadedModel``): its tokenizer and its logits' width."""
        from serving.engine.decoding import vocab_size

        return cls(loaded.tokenizer, vocab_size(loaded.model))

    def _tokenizer_adapter(self):
        with self._lock:
            if self._adapter is None:
                import llguidance.hf

                self._adapter = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        return self._adapter

    def constraint(self, schema: dict[str, Any]) -> JsonConstraint:
        """A fresh constraint for ``schema``; ``Unenforceable`` with the engine's reason when it cannot be."""
        from llguidance import LLMatcher

        adapter = self._tokenizer_adapter()
        try:
            grammar = LLMatcher.grammar_from_json_schema(schema, overrides=GRAMMAR_OPTIONS)
            failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, adapter)
            if failed:
                raise Unenforceable(_reason(messages))
            matcher = LLMatcher(adapter, grammar, log_level=0)
        except (ValueError, TypeError, RuntimeError) as exc:  # the engine's own refusals of odd input
            raise Unenforceable(_reason([str(exc)])) from None
        if matcher.is_error():
            raise Unenforceable(_reason([matcher.get_error()]))
        return JsonConstraint(matcher, self.vocab_size)


def _reason(messages: list[str]) -> str:
    """The engine's first message on one line (a regex error spans several, with a caret under the culprit)."""
    text = next((m for m in messages if m), "the grammar engine rejected it")
    return " ".join(text.split())[:300]
