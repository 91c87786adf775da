"""The KV caches of earlier prompts, kept so that a prompt starting the same way prefills only what is new.

Two kinds of entry, looked up alike:

- **pinned**: the prefixes every prompt shares (the model's system message and chat markup), computed once at
  start-up and never evicted;
- **recent**: the prompts of earlier requests, kept after their prefill within a byte budget, the least recently
  used evicted first (what vLLM calls automatic prefix caching). A question asked again, or a chat that sends its
  conversation again with one more turn, reads its earlier prompt's keys and values from here.

``longest`` finds the entry sharing the most leading tokens with a prompt (the recent ones through a
``PrefixIndex``), and uses that many of its columns: the
keys and values of a position depend only on the tokens up to it, so the first k columns of any prompt that starts
with those k tokens are theirs. At least the prompt's last token is always computed again, since its logits start
the answer. Keys and values are kept per layer as [1, kv heads, tokens, head dim], in the KV cache's dtype and
device. A recent prompt that starts with a pinned prefix keeps only the columns after it and reads the prefix's own:
the chat markup is half of a short chat prompt's columns (SmolLM2: 1.4 MB of float32 keys and values), and it is
held once, not once per prompt.

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


def token_count(kv: KV) -> int:
    """How many columns (token positions) ``kv`` holds."""
    return kv[0][0].shape[2]


@dataclass
class Entry:
    """A kept prompt's keys and values: ``base``'s columns (a pinned prefix it starts with, or none), then its own."""

    base: KV | None
    own: KV

    def parts(self, tokens: int) -> list[KV]:
        """The keys and values of the first ``tokens`` columns, as views of the parts that hold them, in order."""
        out = []
        for part in (self.base, self.own):
            if part is None or tokens == 0:
                continue
            n = min(tokens, token_count(part))
            out.append([(k[:, :, :n], v[:, :, :n]) for k, v in part])
            tokens -= n
        return out


@dataclass
class Hit:
    tokens: int  # leading prompt tokens whose keys and values come from the cache
    parts: list[KV]  # their keys and values, in order: views of a pinned prefix's and of a kept prompt's columns


class PrefixIndex:
    """The recent prompts by the hash of each of their starts (a trie kept in dictionaries: the hash of a prompt's
    first n tokens chains the hash of its first n - 1 with its n-th), so that a lookup walks the prompt's tokens
    once, however many prompts are kept, and compares it with one of them. Hashes only point the way: what a hit
    reads is always compared token for token first, so a collision can lose a hit but never hand out another
    prompt's columns."""

    def __init__(self) -> None:
        self._through: dict[tuple[str | None, int], dict[Key, None]] = {}  # the prompts with this start
        self._whole: dict[tuple[str | None, int], Key] = {}  # the prompt that is exactly this start

    @staticmethod
    def chain(tokens: tuple[int, ...]) -> list[int]:
        """The hash of ``tokens``' first token, of its first two, and so on."""
        hashes, chained = [], 0
        for token in tokens:
            chained = hash((chained, token))
            hashes.append(chained)
        return hashes

    def add(self, key: Key) -> None:
        salt, chain = key[0], self.chain(key[1])
        for chained in chain:
            self._through.setdefault((salt, chained), {})[key] = None
        self._whole[(salt, chain[-1])] = key

    def remove(self, key: Key) -> None:
        salt, chain = key[0], self.chain(key[1])
        for chained in chain:
            keys = self._through.get((salt, chained), {})
            keys.pop(key, None)
            if not keys:
                self._through.pop((salt, chained), None)
        if self._whole.get((salt, chain[-1])) == key:
            del self._whole[(salt, chain[-1])]

    def sharing(self, prompt: tuple[int, ...], salt: str | None) -> Key | None:
        """The kept prompt of ``salt`` added last among those sharing the longest start with ``prompt``."""
        deepest = None
        for chained in self.chain(prompt):
            found = self._through.get((salt, chained))
            if found is None:
                break
            deepest = found
        return next(reversed(deepest)) if deepest else None

    def prefixes(self, prompt: tuple[int, ...], salt: str | None) -> list[Key]:
        """The kept prompts of ``salt`` that are starts of ``prompt`` (by hash: compare before use)."""
        return [key for chained in self.chain(prompt) if (key := self._whole.get((salt, chained)))]


class PromptCache:
    """Pinned prefixes and recent prompts, with their KV caches. ``budget_bytes`` bounds the recent ones (0: none
    are kept), and so does ``max_prompts``. Recent prompts are found through a ``PrefixIndex``: before it, a lookup
    compared the prompt with every kept one (0.3 ms for 100 prompts of 60 tokens, 3 ms for 1,000). ``min_tokens``
    is the shortest match worth reusing."""

    def __init__(self, budget_bytes: int, min_tokens: int = 4, max_prompts: int = 4096) -> None:
        self.budget_bytes = budget_bytes
        self.min_tokens = min_tokens
        self.max_prompts = max_prompts
        self.pinned: list[tuple[tuple[int, ...], KV]] = []
        self.recent: OrderedDict[Key, Entry] = OrderedDict()  # least recently used first
        self.recent_bytes = 0  # the recent prompts' own columns (their pinned prefixes are counted once, not here)
        self.index = PrefixIndex()

    def pin(self, ids: list[int], kv: KV) -> None:
        self.pinned.append((tuple(ids), kv))

    def _base(self, prompt: tuple[int, ...]) -> tuple[int, KV | None]:
        """The longest pinned prefix ``prompt`` starts with, shorter than it: (its length, its keys and values)."""
        fits = [(len(t), kv) for t, kv in self.pinned if len(t) < len(prompt) and prompt[: len(t)] == t]
        return max(fits, key=lambda fit: fit[0], default=(0, None))

    def longest(self, ids: list[int], salt: str | None = None) -> Hit | None:
        """The entry sharing the most leading tokens with ``ids`` (all of them but the last at most), or None when
        no entry shares ``min_tokens``. A recent entry used becomes the most recently used."""
        prompt = tuple(ids)
        if len(prompt) < 2:
            return None
        candidates = [(None, tokens, Entry(None, kv)) for tokens, kv in self.pinned]
        if key := self.index.sharing(prompt, salt):
            candidates.append((key, key[1], self.recent[key]))
        best, best_key, best_entry = 0, None, None
        for key, tokens, entry in candidates:
            if len(tokens) <= best:
                continue
            shared = min(common_length(tokens, prompt), len(prompt) - 1)
            if shared > best:
                best, best_key, best_entry = shared, key, entry
        if best < self.min_tokens:
            return None
        if best_key is not None:
            self.recent.move_to_end(best_key)
        return Hit(best, best_entry.parts(best))

    def covers(self, ids: list[int], salt: str | None = None) -> bool:
        """Whether an entry a prompt of ``salt`` may read already holds every token of ``ids``."""
        prompt = tuple(ids)
        kept = [tokens for tokens, _ in self.pinned]
        if key := self.index.sharing(prompt, salt):
            kept.append(key[1])
        return any(len(t) >= len(prompt) and t[: len(prompt)] == prompt for t in kept)

    def keep(self, ids: list[int], read: Callable[[int], KV], salt: str | None = None) -> None:
        """Keep ``ids``'s keys and values (under ``salt``) as the most recent entry, evicting the least recently
        used past the budget; an entry of the same salt this one extends is dropped (this one answers everything it
        did). ``read(start)`` returns the keys and values of its columns from ``start`` on: those after the pinned
        prefix it starts with, if any. It is called only when the prompt is kept, since its copy out of the batch
        is wasted on a prompt an entry already holds whole."""
        if not self.budget_bytes or self.covers(ids, salt):
            return
        prompt = tuple(ids)
        start, base = self._base(prompt)
        own = read(start)
        size = nbytes(own)
        if size > self.budget_bytes:
            return
        extended = [
            k for k in self.index.prefixes(prompt, salt) if len(k[1]) < len(prompt) and prompt[: len(k[1])] == k[1]
        ]
        for key in extended:
            self._evict(key)
        self.recent[(salt, prompt)] = Entry(base, own)
        self.index.add((salt, prompt))
        self.recent_bytes += size
        while self.recent_bytes > self.budget_bytes or len(self.recent) > self.max_prompts:
            self._evict(next(iter(self.recent)))

    def _evict(self, key: Key) -> None:
        self.recent_bytes -= nbytes(self.recent.pop(key).own)
        self.index.remove(key)

    def describe(self) -> dict:
        return {
            "budget_mb": round(self.budget_bytes / 2**20, 1),
            "max_prompts": self.max_prompts,
            "prompts": len(self.recent),
            "mb": round(self.recent_bytes / 2**20, 1),
        }
