"""``Engine``: the one object the HTTP side holds. It loads a model URI into a warmed-up continuous batch, turns
prompts into requests (``sequence``, ``constrain``), generates them (``submit``, ``enqueue``, ``stream``), decodes
answers and says what it runs with (``describe``). Nothing behind it (the batch, the KV cache, the grammar matcher,
the prompt format) is reachable from ``serving.http`` but through these methods (tests/test_layering.py).

``Engine.load`` is blocking and meant for the thread that then runs ``serve_here``: one thread does all of the
model's work (measured: a decoding step on CPU took twice as long when another long-lived thread had run torch
before, as asyncio.to_thread's pool thread does: OpenMP then has more threads than cores and stops spinning).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from serving.engine.prompting import Prompter, TextStream
from serving.engine.scheduler import Batcher, Job, Sequence

MIN_SHARED_PREFIX = 4  # tokens; a shorter shared prefix saves less than its bookkeeping costs
RESERVED_COLUMNS = 256  # KV-cache columns allocated at start for every row (a prompt and its answer, typically)
WARM_UP = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class EngineOptions:
    """How to load and batch: the model URI (``models:/``, ``runs:/`` or a folder), the batching limits
    (``batch_size_for``: the row count for a device type, known once the model is placed; the server's settings
    hold their defaults), a dtype and device that override the model's own (None keeps them), a prompt-token
    limit that can only lower the model's, and the memory for recent prompts' KV caches."""

    model_uri: str
    batch_size_for: Callable[[str], int]
    max_wait_ms: float
    max_queue: int
    dtype: str | None = None
    device: str | None = None
    max_input_tokens: int | None = None
    prompt_cache_mb: float = 0.0  # recent prompts' KV caches kept for reuse (serving.engine.prompts)


class Engine:
    def __init__(self, spec, loaded, prompter: Prompter, batcher: Batcher, grammars, reference=None) -> None:
        self.spec = spec  # serving.engine.loader.ServingSpec: what was loaded, and from where
        self._loaded, self._prompter, self._batcher, self._grammars = loaded, prompter, batcher, grammars
        self._reference = reference  # the float32 model that bfloat16 or int8 answers are measured against, until then

    @classmethod
    def load(cls, options: EngineOptions) -> Engine:
        """Load, batch and warm up on the calling thread (checksums checked by the loader); raises what failed."""
        from serving.engine.decoding import DecodeBatch
        from serving.engine.loader import load, resolved
        from serving.engine.structured import Grammars

        reference = None
        with resolved(options.model_uri) as spec:
            limit = min(options.max_input_tokens or spec.max_input_tokens, spec.max_input_tokens)
            spec = replace(spec, dtype=options.dtype or spec.dtype, max_input_tokens=limit)
            loaded = load(spec, options.device)
            if spec.dtype != "float32" and spec.eval_questions:  # the folder is readable inside `with` only
                reference = load(replace(spec, dtype="float32"), options.device)
        prompter = Prompter.for_spec(loaded, spec)
        batch = DecodeBatch.for_model(loaded, int(options.prompt_cache_mb * 2**20))
        rows = options.batch_size_for(batch.device.type)
        batch.reserve(rows, RESERVED_COLUMNS)
        _warm_up(batch, prompter)
        batcher = Batcher(batch, rows, options.max_wait_ms, options.max_queue)
        return cls(spec, loaded, prompter, batcher, Grammars.for_model(loaded), reference)

    # --- prompts into requests -------------------------------------------------------------------------------
    @property
    def limits(self) -> tuple[int, int]:
        """(the prompt tokens a request may bring, the model's context window)."""
        return self._prompter.max_input_tokens, self._prompter.context

    def render(self, question: str, template: str | None = None) -> str:
        return self._prompter.render(question, template)

    def render_messages(self, messages: list[dict[str, Any]]) -> str:
        return self._prompter.render_messages(messages)

    def sequence(self, prompt: str, settings: dict[str, Any]) -> Sequence:
        """A request for ``prompt`` with these generation settings; ``PromptTooLong`` past the token limit."""
        return self._prompter.sequence(prompt, settings)

    def constrain(self, seq: Sequence, schema: dict[str, Any]) -> Sequence:
        """``seq`` held to a JSON schema while it decodes; ``Unenforceable`` where the grammar engine cannot."""
        seq.constraint = self._grammars.constraint(schema)
        return seq

    def decode(self, tokens: list[int]) -> str:
        return self._prompter.decode(tokens).strip()

    def text_stream(self) -> TextStream:
        """Token ids in, text pieces out, as far as they decode to whole characters."""
        return TextStream(self._prompter)

    # --- generation ------------------------------------------------------------------------------------------
    async def submit(self, seq: Sequence) -> Sequence:
        return await self._batcher.submit(seq)

    def enqueue(self, seq: Sequence, stream: bool = False) -> Job:
        return self._batcher.enqueue(seq, stream=stream)

    def stream(self, job: Job) -> AsyncIterator[int]:
        return self._batcher.stream(job)

    def serve_here(self) -> None:
        self._batcher.serve_here()

    def request_stop(self) -> None:
        self._batcher.request_stop()

    async def stop(self) -> None:
        await self._batcher.stop()

    def measure_agreement(self, report: Callable[[dict[str, Any]], None]) -> bool:
        """bfloat16 or int8 against float32 on the model's evaluation questions, in idle time; False when there is
        nothing to compare (float32, or no questions)."""
        if self._reference is None:
            return False
        import serving.engine.agreement as agreement

        models, self._reference = [self._reference, self._loaded], None
        self._batcher.when_idle(agreement.stepwise(models, self.spec, report))
        return True

    # --- what it runs with -----------------------------------------------------------------------------------
    @property
    def stats(self):
        return self._batcher.stats

    @property
    def queue_depth(self) -> int:
        return self._batcher.queue_depth

    def describe(self) -> dict[str, Any]:
        """The batcher's account (acceleration, parameters, shared prefixes, limits, queue, counters), with the
        prompt format and the device."""
        return {
            **self._batcher.describe(),
            "chat_format": self._loaded.chat_format,
            "device": str(self._loaded.model.device),
        }


def share_prefixes(batch, prompter: Prompter) -> None:
    """Compute once, in an empty ``batch``, the KV cache of the prompt prefixes the prompter's questions and chats
    share (system message, chat markup): their prompts then prefill only the rest."""
    for prefix in prompter.shared_prefixes():
        if len(prefix) >= MIN_SHARED_PREFIX:
            batch.share_prefix(prefix)


def _warm_up(batch, prompter: Prompter) -> None:
    """Cache the shared prompt prefixes, then two tokens through the real path before the engine is handed out:
    proves the model can be batched this way. With CUDA graphs, one short batch per row bucket captures their
    graphs now, so the first requests do not pay for it."""
    share_prefixes(batch, prompter)
    hello = prompter.render("Hello")
    for rows in batch.graphs.row_buckets() if batch.graphs and batch.graphs.capture else [1]:
        batch.run([prompter.sequence(hello, {**WARM_UP, "max_new_tokens": 2}) for _ in range(rows)])
