"""How far bfloat16 answers agree with float32 ones: the model's evaluation questions, answered greedily through the
server's own batch (``serving.engine.decoding``) in each dtype, compared token by token.

The result says how many answers are identical and, for the others, at which token they first differ on average.
A server in bfloat16 measures it in its idle time after it says ready, one decoding step at a time
(``stepwise``; /model/info, ``dtype_agreement``); ``mode=test test.compare_dtype=bfloat16`` logs it to the test run;
a bf16 export writes it into the bundle's README.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any


def greedy(spec) -> dict[str, Any]:
    """The model's generation defaults, greedy: the answers a client gets with temperature 0."""
    return {**spec.generation, "temperature": 0.0, "top_p": 1.0}


def answer(batch, prompter, questions: list[str], settings: dict[str, Any]) -> tuple[list[list[int]], float]:
    """(each question's answer as token ids, generated tokens per second), all questions in one batch."""
    sequences = [prompter.sequence(prompter.render(q), settings) for q in questions]
    started = time.perf_counter()
    batch.run(sequences)
    elapsed = time.perf_counter() - started
    answers = [s.tokens for s in sequences]
    return answers, sum(map(len, answers)) / elapsed


def first_difference(a: list[int], b: list[int]) -> int:
    """The index of the first token where two answers differ (the shorter length if one extends the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compare(reference: list[list[int]], other: list[list[int]]) -> dict[str, Any]:
    differing = [(a, b) for a, b in zip(reference, other, strict=True) if a != b]
    return {
        "questions": len(reference),
        "identical": len(reference) - len(differing),
        "first_difference_mean": (
            round(sum(first_difference(a, b) for a, b in differing) / len(differing), 1) if differing else None
        ),
    }


def run_dtype(spec, dtype: str, questions: list[str], device: str = "cpu", folder=None):
    """Load ``spec``'s model (or the one in ``folder``) as ``dtype`` and answer ``questions``: (answers, tokens/s)."""
    from serving.engine.decoding import DecodeBatch
    from serving.engine.loader import load
    from serving.engine.prompting import Prompter

    loaded = load(replace(spec, folder=folder or spec.folder, dtype=dtype), device)
    prompter = Prompter.for_spec(loaded, spec)
    batch = DecodeBatch.for_model(loaded)
    batch.run([prompter.sequence(prompter.render("Hello"), {**greedy(spec), "max_new_tokens": 2})])  # warm-up
    return answer(batch, prompter, questions, greedy(spec))


def stepwise(models: list, spec, report: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """The agreement of ``models`` = [a float32 reference, the served model], yielding after every decoding step
    (the server advances it while idle); each model is let go once it has answered. ``report`` gets the result."""
    from serving.engine.decoding import DecodeBatch
    from serving.engine.prompting import Prompter

    answers = []
    while models:
        loaded = models.pop(0)
        prompter = Prompter.for_spec(loaded, spec)
        batch = DecodeBatch.for_model(loaded)
        sequences = [prompter.sequence(prompter.render(q), greedy(spec)) for q in spec.eval_questions]
        batch.admit(sequences)
        yield
        while len(batch):
            batch.step()
            yield
        answers.append([s.tokens for s in sequences])
        del loaded, batch
    report({"reference": "float32", **compare(*answers)})
