"""What bf16 weights cost against float32, measured when a bf16 bundle is exported. The same questions run greedy
through the server's own batch (serving.decoding), once per dtype, on the exporting machine. The result holds the
answers that stay identical, how far the others agree, the batched tokens/s of each, and the size of each."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

QUESTIONS = (
    "What is the capital of France?",
    "What is machine learning?",
    "How many days are there in a week?",
    "What is photosynthesis?",
    "Who wrote Romeo and Juliet?",
    "What is Python?",
    "At what temperature does water boil at sea level?",
    "What is DNA?",
)
MAX_NEW_TOKENS = 48
GREEDY = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.1}


def _generate(folder: Path, spec, dtype: str, questions: list[str]) -> tuple[list[list[int]], float]:
    """(answers as token ids, batched tokens/s) for ``questions`` with the model in ``folder`` loaded as ``dtype``."""
    from serving.decoding import DecodeBatch
    from serving.loader import load
    from serving.prompting import Prompter

    loaded = load(replace(spec, folder=folder, dtype=dtype))
    prompter = Prompter.for_spec(loaded, spec)
    batch = DecodeBatch.for_model(loaded)
    sequences = [prompter.sequence(prompter.render(q), GREEDY) for q in ["Hello", *questions]]
    batch.run(sequences[:1])  # warm-up, untimed
    started = time.perf_counter()
    batch.run(sequences[1:])
    elapsed = time.perf_counter() - started
    answers = [s.tokens for s in sequences[1:]]
    return answers, sum(map(len, answers)) / elapsed


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compare(spec, bf16_folder: Path, questions: list[str]) -> dict:
    reference, reference_speed = _generate(spec.folder, spec, "float32", questions)
    halved, halved_speed = _generate(bf16_folder, spec, "bfloat16", questions)
    differing = [(a, b) for a, b in zip(reference, halved, strict=True) if a != b]
    return {
        "questions": len(questions),
        "max_new_tokens": MAX_NEW_TOKENS,
        "identical": len(questions) - len(differing),
        "common_prefix_mean": (sum(_common_prefix(a, b) for a, b in differing) / len(differing)) if differing else None,
        "tokens_per_s": {"float32": round(reference_speed, 1), "bf16": round(halved_speed, 1)},
        "weights_bytes": {"float32": _weights(spec.folder), "bf16": _weights(bf16_folder)},
        "cpus": os.cpu_count(),
    }


def _weights(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
