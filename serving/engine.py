"""Dynamic batching: concurrent requests gathered into one left-padded ``generate()`` call.

``Batcher.submit`` puts a request on a bounded queue (full: ``Overloaded`` at once, the caller answers 429) and awaits
its result. One worker task takes the first waiting request, gathers more for up to ``max_wait_ms`` or until
``max_batch_size``, drops those whose caller already gave up (timeout or disconnect), and runs the batch on a single
generation thread. Requests with different sampling settings share a batch by running as separate groups in it;
different ``max_new_tokens`` share one group (each answer is cut to its own limit).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lifecycle.generation import generation_kwargs, render


class Overloaded(RuntimeError):
    """The queue is full: try again later."""


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int


@dataclass
class Job:
    prompt: str
    settings: dict[str, Any]
    future: asyncio.Future


@dataclass
class Stats:
    requests: int = 0
    batches: int = 0
    rejected: int = 0
    abandoned: int = 0  # dropped before generation: their caller timed out or disconnected
    running: int = 0  # requests in the batch being generated now
    tokens: int = 0
    generate_s: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "running": self.running,
            "tokens_generated": self.tokens,
            "tokens_per_s": self.tokens / self.generate_s if self.generate_s else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_size_seen": max(self.batch_sizes, default=0),
        }


class Generator:
    """Renders questions in the model's format and generates for a list of (prompt, settings) in groups."""

    def __init__(self, loaded: Any, system: str | None, template: str, max_input_tokens: int = 1024) -> None:
        self.loaded = loaded
        self.system = system
        self.template = template
        self.max_input_tokens = max_input_tokens

    def render(self, question: str, template: str | None = None) -> str:
        """The question in the model's format, with the model's template unless another is given."""
        template = template or self.template
        return render(self.loaded.tokenizer, self.loaded.chat_format, self.system, template, question)

    def render_messages(self, messages: list[dict[str, str]]) -> str:
        """An OpenAI-style conversation in the model's format; models without a chat template get a plain one."""
        tokenizer = self.loaded.tokenizer
        if self.loaded.chat_format == "chat_template":
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.loaded.chat_format == "eos_turns":
            return "".join(m["content"] + tokenizer.eos_token for m in messages if m["role"] != "system")
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*lines, "Assistant:"])

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer.encode(text, add_special_tokens=False))

    def stream(self, prompt: str, settings: dict[str, Any]):
        """Text pieces as they are generated (outside the batcher: generation runs on its own thread)."""
        import threading

        from transformers import TextIteratorStreamer

        tokenizer = self.loaded.tokenizer
        encoded = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs = generation_kwargs(settings)
        thread = threading.Thread(
            target=self.loaded.model.generate,
            kwargs={**encoded, **kwargs, "streamer": streamer, "pad_token_id": tokenizer.pad_token_id},
            daemon=True,
        )
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()

    def generate(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Generated]:
        results: list[Generated | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for index, (_, settings) in enumerate(items):
            kwargs = generation_kwargs(settings)
            kwargs.pop("max_new_tokens")
            groups.setdefault(tuple(sorted(kwargs.items())), []).append(index)
        for key, indices in groups.items():
            limits = [items[i][1]["max_new_tokens"] for i in indices]
            outputs = self._generate([items[i][0] for i in indices], dict(key), limits)
            for i, out in zip(indices, outputs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate(self, prompts: list[str], kwargs: dict[str, Any], limits: list[int]) -> list[Generated]:
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        encoded = tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_input_tokens,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max(limits), pad_token_id=tokenizer.pad_token_id, **kwargs
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        eos = tokenizer.eos_token_id
        results = []
        for row, limit in zip(new_tokens.tolist(), limits, strict=True):
            row = row[:limit]
            if eos in row:
                row = row[: row.index(eos)]
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            results.append(Generated(text, len(row)))
        return results


class Batcher:
    def __init__(
        self,
        generate: Callable[[Sequence[tuple[str, dict]]], list[Generated]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
    ) -> None:
        self._generate = generate
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._worker: asyncio.Task | None = None
        self.stats = Stats()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, prompt: str, settings: dict[str, Any]) -> Generated:
        job = Job(prompt, settings, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise Overloaded(f"{self._queue.maxsize} requests are already queued") from None
        self.stats.requests += 1
        return await job.future

    async def _gather(self) -> list[Job]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), max(remaining, 0)))
            except TimeoutError:
                break
        alive = [job for job in batch if not job.future.done()]  # callers that gave up free their slot
        self.stats.abandoned += len(batch) - len(alive)
        return alive

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            self.stats.running = len(batch)
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._generate, [(job.prompt, job.settings) for job in batch]
                )
            except Exception as exc:  # a failed generate() fails its batch, never the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.stats.running = 0
            self.stats.batches += 1
            self.stats.batch_sizes[len(batch)] += 1
            self.stats.generate_s += time.perf_counter() - started
            for job, out in zip(batch, outputs, strict=True):
                self.stats.tokens += out.tokens
                if not job.future.done():
                    job.future.set_result(out)
