"""Continuous batching at the level of one decoding step, over a Hugging Face causal LM.

A ``DecodeBatch`` holds the sequences being generated now: their KV cache (``serving.engine.kvcache``), the tokens
each has seen (for the repetition penalty), each one's next position and next-token logits. The engine drives it step
by step:

    batch.share_prefix(ids)      # at start: the KV cache of a prompt prefix many requests share (system message)
    batch.admit(new_sequences)   # prefill the newcomers into free rows of the running batch, in one forward pass
    batch.drop(gone)             # sequences whose caller gave up leave before the next forward pass
    finished = batch.step()      # pick every row's next token, retire finished rows, one forward pass for the rest

so a request joins at the next step instead of waiting for a whole batch to finish, and a finished or abandoned one
frees its row at once: the last row moves into the freed slot (one row copied, not the batch). Each row keeps its
own settings (greedy or sampling, temperature, top_p, repetition penalty, max_new_tokens, grammar): one request's
parameters never change another's answer, and nothing one row brings can fail another (``serving.engine.sampling``). A
row whose logits go non-finite, or whose grammar or streaming callback breaks, ends alone with ``Sequence.error``. The
penalty applies to a row's own prompt and output only, never to padding, so an answer does not depend on what it
was batched with.

Every row ends at the same cache column. A newcomer's prompt is laid out so that it ends there too: [cached
prefix][padding][new tokens], or [padding][new tokens]. The cached prefix is the longest start the prompt shares with
a pinned prefix or an earlier prompt (``serving.engine.prompts.PromptCache``), its keys and values copied in rather
than computed; newcomers with different cached prefixes, or none, are prefilled together. Positions count each row's
own tokens, so padding changes nothing for a row; the attention mask hides every hole. Columns no row uses any more
are skipped when reading and reclaimed when the buffer is full.

The decoding step runs eagerly (CPU: packed linear layers, see ``serving.engine.kernels``) or, on CUDA, replays a graph
captured once per (rows, columns) bucket (``serving.engine.graphs``). Models whose layers all use plain full attention
(Llama, GPT-2, Qwen, Mistral without sliding window, ...) are supported; others are refused with a clear error.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch

import serving.engine.sampling as sampling
from serving.engine.graphs import StepGraphs
from serving.engine.kvcache import KVCache, Window, additive_mask
from serving.engine.prompts import Hit, PromptCache, token_count
from serving.engine.scheduler import Sequence


class UnsupportedModel(RuntimeError):
    """The model's cache layout cannot be batched row by row."""


def check_supported(config) -> None:
    from transformers.cache_utils import DynamicCache, DynamicLayer

    kinds = {type(layer).__name__ for layer in DynamicCache(config=config).layers if type(layer) is not DynamicLayer}
    if kinds:
        raise UnsupportedModel(
            f"continuous batching needs plain full-attention KV-cache layers; this model uses {sorted(kinds)} "
            "(sliding-window or hybrid attention), which this server does not support yet"
        )


def eos_token_ids(loaded) -> set[int]:
    """Every token id that ends an answer: the generation config's (one or a list) and the tokenizer's."""
    configured = loaded.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(loaded.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def vocab_size(model) -> int:
    """The logits' width: the output layer's rows, which may exceed the tokenizer's size."""
    return model.get_output_embeddings().weight.shape[0]


def cache_keyword(model) -> str:
    """The name the model's forward takes its cache under: ``cache`` (transformers >= 5.24), else the older
    ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class DecodeBatch:
    HEADROOM = 64  # columns reserved beyond what the batch needs now, whenever it must grow

    def __init__(
        self,
        model,
        pad_token_id: int,
        eos_token_ids: set[int],
        graphs: bool | None = None,
        prompt_cache_bytes: int = 0,
    ) -> None:
        check_supported(model.config)
        self.model = model
        self.device = model.device
        self.pad_token_id = pad_token_id
        self.eos_token_ids = eos_token_ids
        self.vocab_size = vocab_size(model)
        self.cache_keyword = cache_keyword(model)
        self.lean = getattr(model, "serving_step", None)
        self.cache = KVCache(model.config.num_hidden_layers, self.device, model.dtype)
        self.rows: list[Sequence] = []
        self.first: list[int] = []  # each row's first real column
        self.end = 0  # every row's tokens end before this column; the next step writes it
        rows = self.cache.capacity[0]
        self.positions = torch.zeros(rows, dtype=torch.long, device=self.device)  # each row's next position
        self.penalty = torch.ones(rows, device=self.device)  # each row's repetition penalty
        self.seen = torch.zeros((rows, self.vocab_size), dtype=torch.bool, device=self.device)  # prompt + output
        self.logits = torch.zeros((rows, self.vocab_size), device=self.device)  # each row's next-token logits
        self.prompts = PromptCache(prompt_cache_bytes)  # shared prefixes and recent prompts, with their KV cache
        if graphs is None:
            graphs = self.device.type == "cuda"
        capture = self.device.type == "cuda"
        self.graphs = StepGraphs(self.forward, self.cache, pad_token_id, capture) if graphs else None

    @classmethod
    def for_model(cls, loaded, prompt_cache_bytes: int = 0) -> DecodeBatch:
        """An empty batch for a loaded model (``core.model_folder.LoadedModel``): its padding and
        end-of-answer tokens from its tokenizer and generation config; recent prompts kept up to
        ``prompt_cache_bytes``."""
        return cls(
            loaded.model, loaded.tokenizer.pad_token_id, eos_token_ids(loaded), prompt_cache_bytes=prompt_cache_bytes
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def penalizing(self) -> bool:
        """Whether any row has a repetition penalty: only then are seen tokens tracked and penalized."""
        return any(s.repetition_penalty != 1.0 for s in self.rows)

    @property
    def start(self) -> int:
        """The first column any row uses."""
        return min(self.first, default=self.end)

    def run(self, sequences: list[Sequence]) -> None:
        """Admit ``sequences`` and decode until every row has finished (no engine: warm-up and measurements)."""
        self.admit(sequences)
        while self.rows:
            self.step()

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, window: Window) -> torch.Tensor:
        """One eager forward pass over ``window`` of the cache; the float32 logits of each row's last position."""
        self.cache.window = window
        if self.lean is not None:  # the Llama family on CPU: serving.engine.lean
            return self.lean(ids, positions, mask, self.cache)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: the LM head over every prompt token is wasted work
            **{self.cache_keyword: self.cache},
        )
        return out.logits[:, -1].float()

    # ---- room ----

    @torch.inference_mode()
    def reserve(self, rows: int, columns: int) -> None:
        """Allocate room for ``rows`` rows of ``columns`` columns now (the engine's batch size and a typical
        answer), so that serving rarely reallocates; more is allocated when needed."""
        self.cache.reserve(rows, columns, used=(len(self.rows), self.end))
        self._resize_rows(self.cache.capacity[0])

    def _reserve(self, rows: int, span: int = 0) -> None:
        """Room for ``rows`` rows and a batch that ends at column max(end, span), plus the column the next step
        writes: reclaim the columns no row uses any more, then grow if that is not enough."""
        have_rows, have_columns = self.cache.capacity
        if max(self.end, span) + 1 > have_columns and self.start > 0:
            self._shift(-self.start)
        needed = max(self.end, span) + 1
        if rows > have_rows or needed > have_columns:
            self.cache.reserve(rows, needed + self.HEADROOM, used=(len(self.rows), self.end))
            self._resize_rows(self.cache.capacity[0])

    def _shift(self, by: int) -> None:
        self.cache.shift_columns(len(self.rows), self.start, self.end, by)
        self.first = [f + by for f in self.first]
        self.end += by

    def _resize_rows(self, capacity: int) -> None:
        if capacity <= self.positions.shape[0]:
            return
        grow = capacity - self.positions.shape[0]
        self.positions = torch.cat([self.positions, self.positions.new_zeros(grow)])
        self.penalty = torch.cat([self.penalty, self.penalty.new_ones(grow)])
        self.seen = torch.cat([self.seen, self.seen.new_zeros((grow, self.vocab_size))])
        self.logits = torch.cat([self.logits, self.logits.new_zeros((grow, self.vocab_size))])

    # ---- prompts ----

    def describe(self) -> dict:
        """What makes a step fast here (``kernels.describe`` and the CUDA graphs captured), the parameter count, the
        shared prefixes' lengths and the cache of recent prompts."""
        import serving.engine.kernels as kernels

        graphs = self.graphs.captured if self.graphs and self.graphs.capture else []
        captured = [f"CUDA graphs for {len(graphs)} batch shapes"] if graphs else []
        return {
            "acceleration": kernels.describe(self.model) + captured,
            "parameters": kernels.parameters(self.model),
            "shared_prefix_tokens": [len(ids) for ids, _ in self.prompts.pinned],
            "prompt_cache": self.prompts.describe(),
        }

    @torch.inference_mode()
    def share_prefix(self, ids: list[int]) -> None:
        """Compute the KV cache of ``ids`` once and keep it for good; prompts that start with them prefill only
        the rest. Several prefixes may be shared (the model's question template, its chat template)."""
        if self.rows:
            raise RuntimeError("share_prefix() needs an empty batch")
        n = len(ids)
        self.end = 0
        self._reserve(1, n)
        self.cache.mask[0] = self.cache.hole
        self.cache.mask[0, :n] = 0
        tokens = torch.tensor([ids], device=self.device)
        positions = torch.arange(n, device=self.device)[None]
        self.forward(tokens, positions, self._prefill_mask(0, 1, 0, n, n), Window(1, 0, 0, n))
        self.prompts.pin(ids, self.cache.row_keys(0, (0, n)))

    @torch.inference_mode()
    def admit(self, sequences: list[Sequence]) -> None:
        """Prefill ``sequences`` into free rows of the running batch, in one forward pass: each reads the keys and
        values of its longest cached start and computes the rest. Their prompts are then kept for later ones."""
        if not sequences:
            return
        hits = [self.prompts.longest(seq.prompt_ids, seq.cache_salt) for seq in sequences]
        for seq, hit in zip(sequences, hits, strict=True):
            seq.cached_tokens = hit.tokens if hit else 0
        self._prefill(sequences, hits)

    def _prefill(self, sequences: list[Sequence], hits: list[Hit | None]) -> None:
        skips = [hit.tokens if hit else 0 for hit in hits]
        own = [s.prompt_ids[skip:] for s, skip in zip(sequences, skips, strict=True)]
        width = max(map(len, own))
        span = max(skips) + width
        first_row, rows = len(self.rows), len(self.rows) + len(sequences)
        if not self.rows:
            self.end = 0
        self._reserve(rows, span)
        if span > self.end:  # the newcomers are longer than the batch so far: move the batch to the right
            self._shift(span - self.end)
        end, begin = self.end, self.end - span
        mask = self.cache.mask
        mask[first_row:rows] = self.cache.hole
        for row, hit in enumerate(hits, start=first_row):
            if hit:
                mask[row, begin : begin + hit.tokens] = 0
                column = begin
                for part in hit.parts:
                    self.cache.store_prefix(row, row + 1, column, part)
                    column += token_count(part)
        padded = [[self.pad_token_id] * (width - len(tokens)) + tokens for tokens in own]
        ids = torch.tensor(padded, dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(tokens) for tokens in own], device=self.device)[:, None]
        columns = torch.arange(width, device=self.device)
        mask[first_row:rows, end - width : end] = additive_mask(columns >= width - lengths, mask.dtype)
        real = self.cache.real(slice(first_row, rows), slice(begin, end))
        positions = (real.cumsum(-1) - 1).clamp(min=0)[:, span - width :]
        attend = self._prefill_mask(first_row, rows, begin, end, width)
        logits = self.forward(ids, positions, attend, Window(rows, end - width, begin, end, first_row))
        self.logits[first_row:rows] = logits
        self.positions[first_row:rows] = torch.tensor([len(s.prompt_ids) for s in sequences], device=self.device)
        self.penalty[first_row:rows] = torch.tensor([s.repetition_penalty for s in sequences], device=self.device)
        self.seen[first_row:rows] = False
        for i, seq in enumerate(sequences):
            if seq.repetition_penalty != 1.0:  # only a penalized row needs to know what it has seen
                self.seen[first_row + i, torch.tensor(seq.prompt_ids, device=self.device)] = True
        self.first.extend(begin if skip else end - len(tokens) for skip, tokens in zip(skips, own, strict=True))
        self.rows.extend(sequences)
        self._keep_prompts(first_row, sequences, skips, begin)

    def _keep_prompts(self, first_row: int, sequences: list[Sequence], skips: list[int], begin: int) -> None:
        """Copy each newcomer's prompt keys and values (its cached start, then its own tokens) into the prompt
        cache, unless the cache keeps none or already holds the whole prompt."""
        for row, (seq, skip) in enumerate(zip(sequences, skips, strict=True), start=first_row):
            computed = len(seq.prompt_ids) - skip  # its own tokens end at the batch's last column
            spans = (begin, begin + skip), (self.end - computed, self.end)
            self.prompts.keep(seq.prompt_ids, partial(self._prompt_kv, row, spans), seq.cache_salt)

    def _prompt_kv(self, row: int, spans: tuple[tuple[int, int], ...], start: int):
        """A copy of ``row``'s prompt keys and values from its ``start``-th token on, its prompt lying in ``spans``
        of the batch's columns."""
        kept = []
        for first, end in spans:
            kept.append((first + min(start, end - first), end))
            start = max(0, start - (end - first))
        return self.cache.row_keys(row, *kept)

    def _prefill_mask(self, first_row: int, rows: int, begin: int, end: int, width: int) -> torch.Tensor:
        """[rows, 1, width, end - begin]: a prompt position sees the real tokens up to itself (and always itself,
        so a padding position attends to something and stays finite)."""
        columns = torch.arange(begin, end, device=self.device)
        own = torch.arange(end - width, end, device=self.device)[:, None]  # the column of each query position
        real = self.cache.real(slice(first_row, rows), slice(begin, end))[:, None]
        allowed = real & (columns <= own) | (columns == own)
        return additive_mask(allowed[:, None], self.model.dtype)

    # ---- leaving ----

    @torch.inference_mode()
    def drop(self, sequences) -> list[int]:
        """Remove rows (finished, or abandoned by their caller): the last rows move into the freed slots. Returns,
        for each row now in the batch, the index it had before."""
        gone = {id(s) for s in sequences}
        leaving = [i for i, seq in enumerate(self.rows) if id(seq) in gone]
        order = list(range(len(self.rows)))
        if not leaving:
            return order
        keep = len(self.rows) - len(leaving)
        holes = [i for i in leaving if i < keep]
        movers = [i for i in range(keep, len(self.rows)) if id(self.rows[i]) not in gone]
        if holes:
            self.cache.move_rows(movers, holes)
            src = torch.tensor(movers, device=self.device)
            dst = torch.tensor(holes, device=self.device)
            for state in (self.positions, self.penalty, self.seen, self.logits):
                state[dst] = state[src]
            for hole, mover in zip(holes, movers, strict=True):
                self.rows[hole], self.first[hole], order[hole] = self.rows[mover], self.first[mover], mover
        del self.rows[keep:], self.first[keep:]
        return order[:keep]

    # ---- decoding ----

    def _next_tokens(self) -> tuple[torch.Tensor, set[int], dict[int, str]]:
        """Each row's next token (``serving.engine.sampling``); the rows whose grammar allows none (they end without
        one); the rows that must end with an error, and why. Whatever one row brings stays in that row."""
        rows = len(self.rows)
        logits = self.logits[:rows]  # penalized and masked in place: the next forward pass overwrites them
        if self.penalizing:
            sampling.penalize(logits, self.seen[:rows], self.penalty[:rows])
        stuck, failed = set(), {}
        for i, seq in enumerate(self.rows):
            if seq.constraint is None:
                continue
            try:  # structured output: only what the row's grammar accepts next
                allowed = seq.constraint.allowed().to(self.device)
            except Exception as exc:  # a matcher that breaks fails its own row
                failed[i] = f"the response_format grammar failed: {exc}"
                continue
            if allowed.any():
                logits[i].masked_fill_(~allowed, float("-inf"))
            else:  # a grammar that accepts nothing more (a schema no value satisfies): the row ends here
                stuck.add(i)
        chosen, broken = sampling.choose(logits, self.rows, skip=stuck | failed.keys())
        return chosen, stuck, {**failed, **broken}

    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        """Give every row its next token; retire the rows that finished (or failed: their ``error`` says why); run
        the model once for the others. Returns the sequences that finished in this step."""
        rows = len(self.rows)
        chosen, stuck, failed = self._next_tokens()
        if self.penalizing:
            self.seen[torch.arange(rows, device=self.device), chosen] = True
        finished = []
        for index, (seq, token) in enumerate(zip(self.rows, chosen.tolist(), strict=True)):
            if index in failed:
                seq.fail(failed[index])
            elif token in self.eos_token_ids or index in stuck:
                seq.finish_reason = "stop"
            else:
                _take(seq, token)
            if seq.finish_reason:
                finished.append(seq)
        if finished:
            order = self.drop(finished)
            chosen = chosen[torch.tensor(order, dtype=torch.long, device=self.device)]
        if self.rows:
            self._decode(chosen)
        return finished

    def _decode(self, tokens: torch.Tensor) -> None:
        rows = len(self.rows)
        self._reserve(rows)
        end = self.end
        self.cache.mask[:rows, end] = 0
        positions = self.positions[:rows]
        if self.graphs is not None:
            logits = self.graphs.decode(tokens, positions, end)
        else:
            start = self.start
            attend = self.cache.mask[:rows, None, None, start : end + 1]
            logits = self.forward(tokens[:, None], positions[:, None], attend, Window(rows, end, start, end + 1))
        self.logits[:rows] = logits
        self.positions[:rows] += 1
        self.end = end + 1


def _take(seq: Sequence, token: int) -> None:
    """``token`` onto ``seq``: streamed to its caller, through its grammar, up to its limit. What fails here (a
    caller's callback, a grammar) fails this row only."""
    seq.tokens.append(token)
    try:
        if seq.on_token:
            seq.on_token(token)
        if seq.constraint is not None and seq.constraint.consume(token):
            seq.finish_reason = "stop"  # the JSON is complete: nothing may follow it
            return
    except Exception as exc:
        seq.fail(f"{type(exc).__name__}: {exc}")
        return
    if len(seq.tokens) >= seq.max_new_tokens:
        seq.finish_reason = "length"
