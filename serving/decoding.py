"""Continuous batching at the level of one decoding step, over a Hugging Face causal LM and its KV cache.

A ``DecodeBatch`` holds the sequences being generated now: their left-padded KV cache, attention mask, the tokens each
has seen (for the repetition penalty) and the logits of each one's next token. The engine drives it step by step:

    batch.share_prefix(ids)      # once: the KV cache of a prompt prefix most requests share (system message)
    batch.admit(new_sequences)   # prefill the newcomers and merge them into the running batch
    batch.drop(gone)             # sequences whose caller gave up leave before the next forward pass
    finished = batch.step()      # pick every row's next token, retire finished rows, one forward pass for the rest

so a request joins at the next step instead of waiting for a whole batch to finish, and a finished or abandoned one
frees its row at once. Each row keeps its own settings (greedy or sampling, temperature, top_p, repetition penalty,
max_new_tokens): one request's parameters never change another's answer. The penalty applies to a row's own prompt
and output only, never to padding, so an answer does not depend on what it was batched with.

Cache layout: every row has the same cache length; shorter rows are padded on the LEFT and masked out. Positions come
from the mask (each row counts only its own tokens), so padding a row further to the left changes nothing for it. A
row that starts with the shared prefix reuses its KV cache and is laid out as [prefix][padding][own tokens]: masked
holes are as harmless in the middle as on the left.
Models whose layers all use plain full attention (Llama, GPT-2, Qwen, Mistral without sliding window, ...) are
supported; others are refused at load time with a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from serving.engine import Sequence


class UnsupportedModel(RuntimeError):
    """The model's cache layout cannot be merged row by row."""


class SlabLayer(DynamicLayer):
    """A KV-cache layer whose keys and values live in a buffer with room to spare along the sequence axis: a step
    writes its column in place, where ``DynamicLayer`` copies the whole cache (``torch.cat``) at every step."""

    HEADROOM = 64  # columns reserved beyond the current length whenever the buffer is (re)allocated

    def store(self, keys: torch.Tensor, values: torch.Tensor, extra: int = 0) -> None:
        """Hold ``keys``/``values`` (batch, heads, length, dim) in fresh buffers with room for ``extra`` + more."""
        batch, heads, length, dim = keys.shape
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        room = length + extra + max(self.HEADROOM, length // 2)
        self._keys = keys.new_empty((batch, heads, room, dim))
        self._values = values.new_empty((batch, heads, room, values.shape[-1]))
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.store(key_states, value_states)
            return self.keys, self.values
        length, new = self.keys.shape[-2], key_states.shape[-2]
        if length + new > self._keys.shape[-2]:
            self.store(self.keys, self.values, extra=new)
        self._keys[:, :, length : length + new] = key_states
        self._values[:, :, length : length + new] = value_states
        self.keys, self.values = self._keys[:, :, : length + new], self._values[:, :, : length + new]
        return self.keys, self.values


def new_cache(config) -> DynamicCache:
    """An empty cache of ``SlabLayer``s for a model whose every layer is plain full attention."""
    cache = DynamicCache(config=config)
    kinds = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if kinds:
        raise UnsupportedModel(
            f"continuous batching needs plain full-attention KV-cache layers; this model uses {sorted(kinds)} "
            "(sliding-window or hybrid attention), which this server does not support yet"
        )
    cache.layers = [SlabLayer() for _ in cache.layers]
    return cache


def eos_token_ids(loaded) -> set[int]:
    """Every token id that ends an answer: the generation config's (one or a list) and the tokenizer's."""
    configured = loaded.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(loaded.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [width, 0]
    return F.pad(tensor, pad)


class DecodeBatch:
    def __init__(self, model, pad_token_id: int, eos_token_ids: set[int]) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = eos_token_ids
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.rows: list[Sequence] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, cache length] (1 = a real token)
        self.seen: torch.Tensor | None = None  # [rows, vocab] tokens in each row's prompt and output
        self.logits: torch.Tensor | None = None  # [rows, vocab] each row's next-token logits
        self.prefix_ids: list[int] = []  # a prompt prefix shared by most requests (system message, chat markup)
        self.prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def for_model(cls, loaded) -> DecodeBatch:
        """An empty batch for a loaded model (``lifecycle.integrations.models.LoadedModel``): its padding and
        end-of-answer tokens from its tokenizer and generation config."""
        return cls(loaded.model, loaded.tokenizer.pad_token_id, eos_token_ids(loaded))

    def __len__(self) -> int:
        return len(self.rows)

    def run(self, sequences: list[Sequence]) -> None:
        """Admit ``sequences`` and decode until every row has finished (no engine: warm-up and measurements)."""
        self.admit(sequences)
        while self.rows:
            self.step()

    @torch.inference_mode()
    def share_prefix(self, ids: list[int]) -> None:
        """Compute the KV cache of ``ids`` once; prompts that start with them prefill only the rest."""
        cache = new_cache(self.model.config)
        prefix = torch.tensor([ids], dtype=torch.long)
        self.model(input_ids=prefix, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.prefix_ids = list(ids)
        self.prefix_kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]

    def _shares_prefix(self, seq: Sequence) -> bool:
        n = len(self.prefix_ids)
        return n > 0 and len(seq.prompt_ids) > n and seq.prompt_ids[:n] == self.prefix_ids

    @torch.inference_mode()
    def admit(self, sequences: list[Sequence]) -> None:
        """Prefill ``sequences`` (one forward pass for those that share the prefix, one for the others) and merge
        them into the running batch."""
        shared = [s for s in sequences if self._shares_prefix(s)]
        others = [s for s in sequences if not self._shares_prefix(s)]
        for group, prefixed in ((shared, True), (others, False)):
            if group:
                self._merge(*self._prefill(group, prefixed))
                self.rows.extend(group)

    def _prefill(self, sequences: list[Sequence], prefixed: bool):
        """Cache, mask, seen tokens and next-token logits of ``sequences`` (rows laid out as
        [shared prefix][left padding][own tokens] when ``prefixed``, else [left padding][own tokens])."""
        skip = len(self.prefix_ids) if prefixed else 0
        width = max(len(s.prompt_ids) for s in sequences) - skip
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), skip + width), dtype=torch.long)
        mask[:, :skip] = 1
        seen = torch.zeros((len(sequences), self.vocab_size), dtype=torch.bool)
        for row, seq in enumerate(sequences):
            own = torch.tensor(seq.prompt_ids[skip:], dtype=torch.long)
            ids[row, width - len(own) :] = own
            mask[row, skip + width - len(own) :] = 1
            seen[row, torch.tensor(seq.prompt_ids)] = True
        cache = new_cache(self.model.config)
        if prefixed:
            for layer, (keys, values) in zip(cache.layers, self.prefix_kv, strict=True):
                layer.store(keys.expand(len(sequences), -1, -1, -1), values.expand(len(sequences), -1, -1, -1))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: the LM head over every prompt token is wasted work
        )
        return out.past_key_values, mask, seen, _last_logits(out)

    def _merge(self, cache, mask: torch.Tensor, seen: torch.Tensor, logits: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask, self.seen, self.logits = cache, mask, seen, logits
            return
        length = max(self.mask.shape[1], mask.shape[1])
        grow_old, grow_new = length - self.mask.shape[1], length - mask.shape[1]
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.store(
                torch.cat([_left_pad(old.keys, grow_old, -2), _left_pad(new.keys, grow_new, -2)]),
                torch.cat([_left_pad(old.values, grow_old, -2), _left_pad(new.values, grow_new, -2)]),
            )
        self.mask = torch.cat([_left_pad(self.mask, grow_old, 1), _left_pad(mask, grow_new, 1)])
        self.seen = torch.cat([self.seen, seen])
        self.logits = torch.cat([self.logits, logits])

    def drop(self, sequences) -> None:
        """Remove rows (finished, or abandoned by their caller) and the padding no remaining row needs."""
        gone = {id(s) for s in sequences}
        keep = [i for i, seq in enumerate(self.rows) if id(seq) not in gone]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.seen, self.logits = [], None, None, None, None
            return
        index = torch.tensor(keep)
        lead = int((self.mask[index].cumsum(1) == 0).sum(1).min())  # columns that are padding in every kept row
        for layer in self.cache.layers:
            layer.store(layer.keys[index, :, lead:], layer.values[index, :, lead:])
        self.mask = self.mask[index, lead:]
        self.seen, self.logits = self.seen[index], self.logits[index]
        self.rows = [self.rows[i] for i in keep]

    def _next_tokens(self) -> torch.Tensor:
        logits = self.logits
        penalty = torch.tensor([s.repetition_penalty for s in self.rows], dtype=logits.dtype)[:, None]
        logits = torch.where(self.seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
        chosen = logits.argmax(-1)
        sampled = [i for i, s in enumerate(self.rows) if s.temperature > 0]
        if sampled:
            index = torch.tensor(sampled)
            chosen[index] = _sample(
                logits[index],
                torch.tensor([self.rows[i].temperature for i in sampled], dtype=logits.dtype)[:, None],
                torch.tensor([self.rows[i].top_p for i in sampled], dtype=logits.dtype)[:, None],
            )
        return chosen

    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        """Give every row its next token; retire the rows that finished; run the model once for the others.
        Returns the sequences that finished in this step."""
        chosen = self._next_tokens().tolist()
        finished = []
        for seq, token in zip(self.rows, chosen, strict=True):
            if token in self.eos_token_ids:
                seq.finish_reason = "stop"
            else:
                seq.tokens.append(token)
                if seq.on_token:
                    seq.on_token(token)
                if len(seq.tokens) >= seq.max_new_tokens:
                    seq.finish_reason = "length"
            if seq.finish_reason:
                finished.append(seq)
        tokens = torch.tensor(chosen)
        self.seen[torch.arange(len(self.rows)), tokens] = True
        alive = [i for i, seq in enumerate(self.rows) if not seq.finish_reason]
        tokens = tokens[alive]
        self.drop(finished)
        if self.rows:
            self._forward(tokens)
        return finished

    def _forward(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.logits = out.past_key_values, _last_logits(out)


def _last_logits(out) -> torch.Tensor:
    """Next-token logits, in float32 at least (half-precision models sample in float32)."""
    logits = out.logits[:, -1]
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Temperature, then nucleus (top-p) filtering, then one draw per row."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus (the first always stays)
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    picks = torch.multinomial(sorted_probs, 1)
    return order.gather(-1, picks).squeeze(-1)
