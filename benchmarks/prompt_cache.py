"""How long the cache of recent prompts takes to find what a new prompt can reuse, as it keeps more prompts.

    python benchmarks/prompt_cache.py [--kept 100 1000 4000] [--lookups 400] [--seed 0]

Every newcomer looks the cache up once (``PromptCache.longest``) and once more when its prompt is kept
(``PromptCache.covers``), so a burst of 64 newcomers looks up 128 times before its prefill. The prompts are chats
as the server sees them: SmolLM2's 23-token chat markup (pinned, as the server pins it) and 10 to 40 tokens of
question; half of the lookups ask a kept prompt again, half a new one. Keys and values are stand-ins of one
element: only the bookkeeping is timed.

Measured, in one run, for each number of kept prompts:

- ``prefix index``: ``serving.engine.prompts.PromptCache`` as the server runs it (its ``PrefixIndex``);
- ``compare each`` (the baseline, what the cache did before the index): the prompt compared with every pinned and
  kept prompt, the longest shared start kept.

Both must find the same number of tokens for every lookup; the benchmark stops if they do not.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, ahead of benchmarks/serving.py

from serving.engine.prompts import PromptCache, common_length

MARKUP_TOKENS = 23  # SmolLM2's system message and chat markup, the prefix the server pins
VOCABULARY = 49152


def stand_in(tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, 1, tokens, 1), torch.zeros(1, 1, tokens, 1))]


def columns_from(tokens: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return stand_in(tokens - start)


def compare_each(cache: PromptCache, prompt: tuple[int, ...]) -> int:
    """The baseline: the longest start ``prompt`` shares with any pinned or kept prompt, all but its last token
    at most, found by comparing it with each (0 under the cache's ``min_tokens``, where ``longest`` gives None)."""
    kept = [tokens for tokens, _ in cache.pinned] + [key[1] for key in cache.recent]
    best = max((min(common_length(tokens, prompt), len(prompt) - 1) for tokens in kept), default=0)
    return best if best >= cache.min_tokens else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kept", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--lookups", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    markup = [rng.randrange(VOCABULARY) for _ in range(MARKUP_TOKENS)]

    def chat() -> list[int]:
        return markup + [rng.randrange(VOCABULARY) for _ in range(rng.randrange(10, 41))]

    print(f"{'kept':>6} | {'prefix index':>14} | {'compare each':>14} | speed-up")
    for kept in args.kept:
        cache = PromptCache(budget_bytes=2**40, max_prompts=kept)
        cache.pin(markup, stand_in(len(markup)))
        prompts = [chat() for _ in range(kept)]
        for ids in prompts:
            cache.keep(ids, partial(columns_from, len(ids)))
        asked = [tuple(rng.choice(prompts)) if i % 2 else tuple(chat()) for i in range(args.lookups)]

        started = time.perf_counter()
        found = []
        for prompt in asked:
            hit = cache.longest(list(prompt))
            cache.covers(list(prompt))
            found.append(hit.tokens if hit else 0)
        indexed = (time.perf_counter() - started) / len(asked)

        started = time.perf_counter()
        expected = []
        for prompt in asked:
            expected.append(compare_each(cache, prompt))
            any(len(t) >= len(prompt) and t[: len(prompt)] == prompt for t in (key[1] for key in cache.recent))
        baseline = (time.perf_counter() - started) / len(asked)

        if found != expected:
            raise SystemExit(f"{kept} kept prompts: the index and the comparison with each disagree")
        print(f"{kept:>6} | {indexed * 1e3:>11.3f} ms | {baseline * 1e3:>11.3f} ms | {baseline / indexed:7.1f}x")


if __name__ == "__main__":
    main()
