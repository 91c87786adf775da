"""The KV caches of earlier prompts, kept so that a prompt starting the same way prefills only what is new.

Two kinds of entry, looked up alike:

- **pinned**: the prefixes every prompt shares (the model's system message and chat markup), computed once at
  start-up and never evicted;
- **recent**: the prompts of earlier requests, kept after their prefill within a byte budget, the least recently
  used evicted first (what vLLM calls automatic prefix caching). A question asked again, or a chat that sends its
  conversation again with one more turn, reads its earlier prompt's keys and values from here.

``longest`` finds the entry sharing the most leading tokens with a prompt, and uses that many of its columns: the
keys and values of a position depend only on the tokens up to it, so the first k columns of any prompt that starts
with those k tokens are theirs. At least the prompt's last token is always computed again, since its logits start
the answer. An entry holds one row's keys and values per layer, [1, kv heads, tokens, head dim], in the KV cache's
dtype and device.

A prompt that starts like a recent one is answered sooner, which tells a caller, by timing, what others have asked
(vLLM's CVE-2025-46570). A request may therefore bring a salt (``cache_salt``, as in vLLM's API): it then reads and
leaves only recent prompts of the same salt, beside the pinned prefixes every prompt starts with anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of one row
Key = tuple[str | None, tuple[int, ...]]  # a recent prompt: its salt (None: none given) and its tokens


def nbytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


@dataclass
class Hit:
    tokens: int  # leading prompt tokens whose keys and values come from the cache
    kv: KV  # their keys and values (views of the entry's first ``tokens`` columns)


class PromptCache:
    """Pinned prefixes and recent prompts, with their KV caches. ``budget_bytes`` bounds the recent ones (0: none
    are kept), and so does ``max_prompts``: a lookup compares the prompt with every entry (0.3 ms for 100 entries of
    60 tokens, 3 ms for 1,000, measured), and a burst of 64 newcomers looks up 64 times. ``min_tokens`` is the
    shortest match worth reusing."""

    def __init__(self, budget_bytes: int, min_tokens: int = 4, max_prompts: int = 256) -> None:
        self.budget_bytes = budget_bytes
        self.min_tokens = min_tokens
        self.max_prompts = max_prompts
        self.pinned: list[tuple[tuple[int, ...], KV]] = []
        self.recent: OrderedDict[Key, KV] = OrderedDict()  # least recently used first
        self.recent_bytes = 0

    def pin(self, ids: list[int], kv: KV) -> None:
        self.pinned.append((tuple(ids), kv))

    def _readable(self, salt: str | None):
        """(key, tokens, kv) of every entry a prompt of ``salt`` may read: the pinned ones and its salt's."""
        yield from ((None, tokens, kv) for tokens, kv in self.pinned)
        yield from ((key, key[1], kv) for key, kv in self.recent.items() if key[0] == salt)

    def longest(self, ids: list[int], salt: str | None = None) -> Hit | None:
        """The entry sharing the most leading tokens with ``ids`` (all of them but the last at most), or None when
        no entry shares ``min_tokens``. A recent entry used becomes the most recently used."""
        prompt = tuple(ids)
        if len(prompt) < 2:
            return None
        best, best_key, best_kv = 0, None, None
        for key, tokens, kv in self._readable(salt):
            if tokens[0] != prompt[0] or len(tokens) <= best:
                continue
            shared = min(common_length(tokens, prompt), len(prompt) - 1)
            if shared > best:
                best, best_key, best_kv = shared, key, kv
        if best < self.min_tokens:
            return None
        if best_key is not None:
            self.recent.move_to_end(best_key)
        return Hit(best, [(k[:, :, :best], v[:, :, :best]) for k, v in best_kv])

    def covers(self, ids: list[int], salt: str | None = None) -> bool:
        """Whether an entry a prompt of ``salt`` may read already holds every token of ``ids``."""
        prompt = tuple(ids)
        return any(len(t) >= len(prompt) and t[: len(prompt)] == prompt for _, t, _ in self._readable(salt))

    def keep(self, ids: list[int], read: Callable[[], KV], salt: str | None = None) -> None:
        """Keep ``ids``'s keys and values (under ``salt``) as the most recent entry, evicting the least recently
        used past the budget; an entry of the same salt this one extends is dropped (this one answers everything it
        did). ``read`` returns those keys and values; it is called only when the prompt is kept, since its copy out
        of the batch is wasted on a prompt an entry already holds whole."""
        if not self.budget_bytes or self.covers(ids, salt):
            return
        kv = read()
        size = nbytes(kv)
        if size > self.budget_bytes:
            return
        prompt = tuple(ids)
        extended = [k for k in self.recent if k[0] == salt and len(k[1]) < len(prompt) and prompt[: len(k[1])] == k[1]]
        for key in extended:
            self._evict(key)
        self.recent[(salt, prompt)] = kv
        self.recent_bytes += size
        while self.recent_bytes > self.budget_bytes or len(self.recent) > self.max_prompts:
            self._evict(next(iter(self.recent)))

    def _evict(self, key: Key) -> None:
        self.recent_bytes -= nbytes(self.recent.pop(key))

    def describe(self) -> dict:
        return {
            "budget_mb": round(self.budget_bytes / 2**20, 1),
            "max_prompts": self.max_prompts,
            "prompts": len(self.recent),
            "mb": round(self.recent_bytes / 2**20, 1),
        }
