"""The contract run's own schemathesis check, loaded by ``schemathesis`` itself (``SCHEMATHESIS_HOOKS``), not by
pytest: a request the document allows may be refused only for a reason the document states.

schemathesis's ``positive_data_acceptance`` takes 400 as an answer to a valid request (``schemathesis.toml`` beside
this file): a prompt over the token limit is well formed and still refused. This check then holds each such 400 to
the document: its ``type`` must be one the operation's 400 description names, and a ``context_length_exceeded``
must come with a prompt over the limit the operation's description states (or, with max_new_tokens, over the
model's context), so the server refuses nothing the document promises.
"""

from __future__ import annotations

import re

import schemathesis

STATED_LIMIT = re.compile(r"at most \*\*(\d+) tokens\*\*")
STATED_CONTEXT = re.compile(r"context of (\d+) tokens")
PROMPT_COUNT = re.compile(r"the prompt has (\d+) tokens")
WITH_NEW_TOKENS = re.compile(r"the prompt has (\d+) tokens and max_new_tokens is (\d+)")


@schemathesis.check
def refused_only_for_stated_reasons(ctx, response, case) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    operation = case.operation.definition.raw
    stated = operation["responses"].get("400", {}).get("description", "")
    for item in response.json()["detail"]:
        if f"type {item['type']}" not in stated:
            raise AssertionError(f"a valid request got 400 {item['type']!r}, which the document does not state here")
        if item["type"] == "context_length_exceeded":
            _over_the_stated_limit(item["msg"], operation.get("description", ""))
    return None


def _over_the_stated_limit(message: str, description: str) -> None:
    limit, context = STATED_LIMIT.search(description), STATED_CONTEXT.search(description)
    if not limit:
        raise AssertionError(f"context_length_exceeded, but the operation states no token limit: {description!r}")
    if together := WITH_NEW_TOKENS.search(message):
        prompt, new = map(int, together.groups())
        if not context or prompt + new <= int(context[1]):
            raise AssertionError(f"refused within the stated context ({context and context[1]}): {message}")
    elif not (count := PROMPT_COUNT.search(message)) or int(count[1]) <= int(limit[1]):
        raise AssertionError(f"refused within the stated limit of {limit[1]} tokens: {message}")
