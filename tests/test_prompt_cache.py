"""The prompt cache's bookkeeping (serving.engine.prompts): which entry a prompt reads, how much of it, what is kept
and what is evicted. That the keys and values it hands out give the answers a full prefill gives is checked on the
real model in tests/test_decoding.py."""

from __future__ import annotations

import random

import pytest
import torch

from serving.engine.prompts import PromptCache, common_length, nbytes

LAYERS, HEADS, DIM = 2, 1, 4


def kv(ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values whose columns carry their token, so a test can see which columns it was handed."""
    column = torch.tensor(ids, dtype=torch.float32)[None, None, :, None].expand(1, HEADS, len(ids), DIM)
    return [(column.clone(), -column.clone()) for _ in range(LAYERS)]


def keep(cache: PromptCache, ids: list[int], salt: str | None = None) -> None:
    cache.keep(ids, lambda start: kv(ids[start:]), salt)


def read_columns(hit) -> list[int]:
    """The tokens whose keys and values ``hit`` hands out, in order (layer 0's keys; values are their negatives)."""
    out = []
    for part in hit.parts:
        assert all(torch.equal(v, -k) for k, v in part)
        out += part[0][0][0, 0, :, 0].int().tolist()
    return out


def per_token() -> int:
    return nbytes(kv([1]))


def test_common_length_is_the_shared_start_for_any_pair():
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
        b = a[: rng.randrange(len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(10))]
        expected = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_length(tuple(a), tuple(b)) == expected


def test_the_longest_shared_start_is_read_and_never_the_last_token():
    cache = PromptCache(budget_bytes=100 * per_token())
    cache.pin([1, 2, 3, 4], kv([1, 2, 3, 4]))
    keep(cache, [1, 2, 3, 4, 5, 6, 7])
    hit = cache.longest([1, 2, 3, 4, 5, 6, 9])
    assert hit.tokens == 6 and read_columns(hit) == [1, 2, 3, 4, 5, 6]
    assert cache.longest([1, 2, 3, 4, 5, 6, 7]).tokens == 6  # asked again: its last token is computed again
    assert cache.longest([1, 2, 3, 4, 8]).tokens == 4  # the pinned prefix serves as well as the recent prompt
    assert cache.longest([1, 2, 3, 9, 9]) is None  # 3 tokens: shorter than min_tokens
    assert cache.longest([5, 1, 2, 3, 4]) is None


def test_a_salted_prompt_reads_only_its_salts_prompts_and_the_pinned_prefixes():
    cache = PromptCache(budget_bytes=100 * per_token())
    cache.pin([1, 2, 3, 4], kv([1, 2, 3, 4]))
    asked = [1, 2, 3, 4, 5, 6, 7, 8]
    keep(cache, asked)  # no salt
    assert cache.longest(asked, salt="tenant-a").tokens == 4  # the pinned prefix only
    assert not cache.covers(asked, "tenant-a")
    keep(cache, asked, "tenant-a")
    assert cache.longest(asked, salt="tenant-a").tokens == 7
    assert cache.longest(asked, salt="tenant-b").tokens == 4
    assert cache.longest(asked).tokens == 7 and len(cache.recent) == 2
    longer = [*asked, 9, 10]
    keep(cache, longer, "tenant-a")  # replaces tenant-a's shorter entry, not the unsalted one
    assert list(cache.recent) == [(None, tuple(asked)), ("tenant-a", tuple(longer))]


def test_a_longer_prompt_replaces_the_one_it_extends_and_a_covered_one_is_not_kept():
    cache = PromptCache(budget_bytes=100 * per_token())
    keep(cache, [1, 2, 3, 4, 5])
    keep(cache, [1, 2, 3, 4, 5, 6, 7, 8])
    assert list(cache.recent) == [(None, (1, 2, 3, 4, 5, 6, 7, 8))]
    read = []
    cache.keep([1, 2, 3], lambda start: read.append(start) or kv([1, 2, 3][start:]))
    assert not read  # covered: its keys and values are not even copied out of the batch
    assert list(cache.recent) == [(None, (1, 2, 3, 4, 5, 6, 7, 8))] and cache.recent_bytes == 8 * per_token()


def test_the_least_recently_used_prompts_leave_first_and_the_budget_holds():
    cache = PromptCache(budget_bytes=12 * per_token())
    for first in (10, 20, 30):
        keep(cache, [first, 1, 2, 3, 4])
    assert [tokens for _, tokens in cache.recent] == [(20, 1, 2, 3, 4), (30, 1, 2, 3, 4)]
    cache.longest([20, 1, 2, 3, 4, 5])  # used: now the most recent
    keep(cache, [40, 1, 2, 3, 4])
    assert [tokens for _, tokens in cache.recent] == [(20, 1, 2, 3, 4), (40, 1, 2, 3, 4)]
    assert cache.recent_bytes <= cache.budget_bytes
    keep(cache, list(range(100, 113)))  # larger than the whole budget: not kept
    assert len(cache.recent) == 2
    assert cache.describe()["prompts"] == 2


def test_the_number_of_prompts_is_bounded_too():
    cache = PromptCache(budget_bytes=100 * per_token(), max_prompts=3)
    for first in range(10):
        keep(cache, [first, 1, 2, 3])
    assert [tokens[0] for _, tokens in cache.recent] == [7, 8, 9]


def test_a_prompt_keeps_only_its_columns_after_the_pinned_prefix_and_reads_them_back_in_order():
    cache = PromptCache(budget_bytes=100 * per_token())
    cache.pin([1, 2, 3, 4], kv([1, 2, 3, 4]))
    cache.pin([1, 2, 3, 4, 5, 6], kv([1, 2, 3, 4, 5, 6]))  # a longer shared prefix (another template)
    starts = []
    cache.keep(
        [1, 2, 3, 4, 5, 6, 7, 8, 9], lambda start: starts.append(start) or kv([1, 2, 3, 4, 5, 6, 7, 8, 9][start:])
    )
    assert starts == [6] and cache.recent_bytes == 3 * per_token()  # the longest pinned prefix is not copied
    hit = cache.longest([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert hit.tokens == 9 and read_columns(hit) == [1, 2, 3, 4, 5, 6, 7, 8, 9] and len(hit.parts) == 2
    hit = cache.longest([1, 2, 3, 4, 5, 6, 7, 0])
    assert hit.tokens == 7 and read_columns(hit) == [1, 2, 3, 4, 5, 6, 7]
    keep(cache, [9, 1, 2, 3, 4, 5])  # starts with no pinned prefix: kept whole
    assert cache.recent_bytes == 9 * per_token()
    for key in list(cache.recent):
        cache._evict(key)
    assert cache.recent_bytes == 0


def shared_starts(cache: PromptCache, prompt: list[int], salt: str | None = None) -> tuple[int, int]:
    """What comparing ``prompt`` with every pinned and every readable recent prompt finds (the cache without its
    index): the most leading tokens it shares with a pinned one, and with a recent one (all but its last at most)."""

    def best(prompts) -> int:
        return max((min(common_length(t, tuple(prompt)), len(prompt) - 1) for t in prompts), default=0)

    return best(t for t, _ in cache.pinned), best(key[1] for key in cache.recent if key[0] == salt)


@pytest.mark.parametrize("seed", range(3))
def test_any_prompt_reads_the_longest_start_it_shares_and_exactly_its_columns(seed):
    """Whatever was pinned, kept (under salts) and evicted: a hit reads as many tokens as comparing the prompt with
    every pinned and readable kept prompt finds (all but its last at most), and exactly their columns."""
    rng = random.Random(seed)
    for _ in range(300):
        cache = PromptCache(rng.choice([6, 20, 100, 400]) * per_token(), min_tokens=rng.randrange(1, 5))
        shared = [rng.randrange(1, 3) for _ in range(rng.randrange(1, 8))]
        cache.pin(shared, kv(shared))
        for _ in range(rng.randrange(1, 30)):
            ids = (shared if rng.random() < 0.7 else []) + [rng.randrange(1, 3) for _ in range(rng.randrange(1, 40))]
            keep(cache, ids, rng.choice([None, None, "a"]))
            assert cache.recent_bytes <= cache.budget_bytes
            assert cache.recent_bytes == sum(nbytes(entry.own) for entry in cache.recent.values())
        prompt = (shared if rng.random() < 0.7 else []) + [rng.randrange(1, 3) for _ in range(rng.randrange(1, 45))]
        salt = rng.choice([None, "a"])
        expected = max(shared_starts(cache, prompt, salt))
        hit = cache.longest(prompt, salt)
        if expected < cache.min_tokens:
            assert hit is None
        else:
            assert hit.tokens == expected and read_columns(hit) == prompt[:expected]


def test_a_prompt_is_found_among_many_that_start_alike_comparing_only_one(monkeypatch):
    """500 kept chats with the same 23-token markup (pinned) and a 12-token question opening: each asked again reads
    all but its last token, and a lookup compares it with the pinned prefix and one kept prompt, whatever the
    count."""
    from serving.engine import prompts

    rng = random.Random(5)
    markup, opening = [rng.randrange(100) for _ in range(23)], [rng.randrange(100) for _ in range(12)]
    cache = PromptCache(budget_bytes=10**6 * per_token(), max_prompts=1000)
    cache.pin(markup, kv(markup))
    asked = [markup + opening + [rng.randrange(100) for _ in range(rng.randrange(5, 30))] for _ in range(500)]
    for ids in asked:
        keep(cache, ids)
    assert len(cache.recent) == 500
    compared = []
    monkeypatch.setattr(prompts, "common_length", lambda a, b: compared.append(a) or common_length(a, b))
    for ids in rng.sample(asked, 50):
        compared.clear()
        hit = cache.longest(ids)
        assert hit.tokens == len(ids) - 1 and read_columns(hit) == ids[:-1]
        assert len(compared) <= 2
