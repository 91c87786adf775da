"""The batching engine: one generation thread running continuous batching, and the asyncio side that feeds it.

- ``Batcher.enqueue`` puts a request (a ``Sequence``) on a bounded waiting list; when the list is full it raises
  ``Overloaded`` at once (the HTTP layer answers 429 with Retry-After).
- The generation thread admits waiting requests into the running batch at every decoding step, up to
  ``max_batch_size`` rows. When it is idle, it waits up to ``max_wait_ms`` for more requests before the first prefill,
  so a burst is prefilled together.
- A caller that gives up (timeout, disconnect) marks its job gone: it leaves the waiting list or the running batch
  before the next step, and its row goes to the next request.
- ``submit`` awaits the whole answer. ``stream`` yields token ids as they are generated. Streams share the batch
  with everything else.
- One row failing (``Sequence.error``: its logits went non-finite, its grammar or its caller's callback broke) fails
  that request alone with ``GenerationFailed``. A prefill that fails is retried one request at a time, so only the
  prompt that cannot be read fails. A failing forward pass of a decoding step fails the rows of that step. The
  thread goes on in every case, so the server keeps serving.
- ``when_idle`` gives the thread background work (the bfloat16 agreement check) that it advances one step at a
  time, only once no request has been waiting or running for ``idle_grace_s`` (0.25 s): a request that arrives
  waits for one such step at most, and a client that sends its next request as soon as an answer comes (a chat,
  a benchmark's closed loop) never waits for one. Measured with one such client on a bfloat16 server: without the
  grace, a quarter of the generation thread's first ten seconds went to the agreement's float32 steps, between
  its requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    """One request's generation: its prompt ids, its settings and, as it goes, its tokens."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (end-of-sequence token), "length" (max_new_tokens) or "error"
    error: str | None = None  # why this row, and only this row, failed (finish_reason "error")
    on_token: Callable[[int], None] | None = None  # called from the generation thread for each new token
    constraint: Any = None  # serving.engine.structured.JsonConstraint: the tokens this row may take next (None: any)
    cached_tokens: int = 0  # leading prompt tokens whose keys and values came from the prompt cache, not computed
    cache_salt: str | None = None  # reads and leaves only cached prompts of the same salt (serving.engine.prompts)
    # wall-clock times (ns) the engine records, for the request's trace: queued, given a row, first token, ended
    queued_ns: int | None = None
    admitted_ns: int | None = None
    first_token_ns: int | None = None
    finished_ns: int | None = None

    def fail(self, reason: str) -> None:
        """End this row with an error; the rest of the batch goes on."""
        self.finish_reason, self.error = "error", reason


class Batch(Protocol):
    """What the engine drives (``serving.engine.decoding.DecodeBatch``): the rows being generated now."""

    def __len__(self) -> int: ...

    def admit(self, sequences: list[Sequence]) -> None: ...

    def drop(self, sequences: list[Sequence]) -> Any: ...

    def step(self) -> list[Sequence]: ...

    def describe(self) -> dict[str, Any]: ...


class Overloaded(RuntimeError):
    """The waiting list is full: try again later."""


class ShuttingDown(RuntimeError):
    """The server is stopping; the request was not generated."""


class GenerationFailed(RuntimeError):
    """This request's row ended with an error (its ``Sequence.error``); the other rows of its batch went on."""


@dataclass(eq=False)
class Job:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future  # the finished Sequence, or the generation error
    tokens: asyncio.Queue | None = None  # streaming: token ids, then the finished Sequence or the error
    gone: bool = False  # the caller gave up: drop the job before the next step

    def finish(self, outcome: Sequence | BaseException) -> None:
        """From the generation thread: hand the outcome to the caller's event loop."""
        self.loop.call_soon_threadsafe(self._settle, outcome)

    def _settle(self, outcome: Sequence | BaseException) -> None:
        if self.tokens is not None:
            self.tokens.put_nowait(outcome)
        if self.done.done():
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
            self.done.exception()  # retrieved here: a stream reports it through its queue instead
        else:
            self.done.set_result(outcome)


@dataclass
class Stats:
    requests: int = 0
    rejected: int = 0
    abandoned: int = 0  # callers that gave up (timeout, disconnect) before their answer was complete
    failed: int = 0
    running: int = 0  # rows in the batch now
    steps: int = 0  # decoding steps (one forward pass each)
    prefills: int = 0
    tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens of the requests admitted
    prompt_tokens_cached: int = 0  # of which read from the prompt cache, not computed
    prefill_s: float = 0.0  # model time spent reading prompts
    generate_s: float = 0.0  # model time in all: prefills and decoding steps
    batch_sizes: Counter = field(default_factory=Counter)  # decoding steps by the number of rows in them

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of model time."""
        return self.tokens / self.generate_s if self.generate_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "failed": self.failed,
            "running": self.running,
            "steps": self.steps,
            "prefills": self.prefills,
            "tokens_generated": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_cached": self.prompt_tokens_cached,
            "prefill_s": round(self.prefill_s, 3),
            "generate_s": round(self.generate_s, 3),
            "tokens_per_s": self.tokens_per_s,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_size_seen": max(self.batch_sizes, default=0),
        }


class Batcher:
    def __init__(
        self, batch: Batch, max_batch_size: int, max_wait_ms: float, max_queue: int, idle_grace_s: float = 0.25
    ) -> None:
        self.batch = batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = Stats()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._idle_work: Iterator[None] | None = None
        self.idle_grace_s = idle_grace_s
        self._last_busy = 0.0  # monotonic time of the last admission or step

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def describe(self) -> dict[str, Any]:
        """What the engine runs with and has done, for /model/info: the batch's own account (what makes a step
        fast, the parameters, the shared prefixes), the batching limits, the queue and the counters."""
        return {
            **self.batch.describe(),
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
            "queue_depth": self.queue_depth,
            "stats": self.stats.as_dict(),
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="generate", daemon=True)
        self._thread.start()

    def serve_here(self) -> None:
        """Run the generation loop in the calling thread until ``stop``: for a thread that already owns the model
        (it loaded it), so that one thread does all of the model's work (see ``serving.http.state``)."""
        self._thread = threading.current_thread()
        self._loop()

    def when_idle(self, work: Iterator[None]) -> None:
        """Advance ``work`` one step whenever no request is waiting or running, until it is exhausted."""
        with self._cond:
            self._idle_work = work
            self._cond.notify()

    def request_stop(self) -> None:
        """Ask the generation loop to end (it fails what is still waiting or running with ShuttingDown)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    async def stop(self) -> None:
        self.request_stop()
        if self._thread and self._thread is not threading.current_thread():
            await asyncio.to_thread(self._thread.join, 30)

    def enqueue(self, seq: Sequence, stream: bool = False) -> Job:
        """Queue a request (from the event loop). ``Overloaded`` at once when the waiting list is full."""
        loop = asyncio.get_running_loop()
        job = Job(seq, loop, loop.create_future(), asyncio.Queue() if stream else None)
        if stream:
            seq.on_token = lambda token: loop.call_soon_threadsafe(job.tokens.put_nowait, token)
        job.done.add_done_callback(lambda future: setattr(job, "gone", job.gone or future.cancelled()))
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                self.stats.rejected += 1
                raise Overloaded(f"{self.max_queue} requests are already waiting")
            seq.queued_ns = time.time_ns()
            self._waiting.append(job)
            self.stats.requests += 1
            self._cond.notify()
        return job

    async def submit(self, seq: Sequence) -> Sequence:
        """Generate ``seq`` to its end. Cancelling the awaiting task frees its place (waiting or running)."""
        return await self.enqueue(seq).done

    async def stream(self, job: Job) -> AsyncIterator[int]:
        """Token ids of a job queued with ``stream=True`` as they come. Closing the iterator early frees its row."""
        try:
            while True:
                item = await job.tokens.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Sequence):
                    return
                yield item
        finally:
            job.gone = job.gone or not job.done.done()

    # ---- the generation thread ----

    def _take(self) -> list[Job] | None:
        """Waiting jobs that fit in the batch now; blocks while idle (unless there is idle work: then []). None when
        stopping."""
        with self._cond:
            if not self._running:
                while not self._waiting and not self._stopping:
                    if self._idle_work is not None:
                        quiet = self._last_busy + self.idle_grace_s - time.monotonic()
                        if quiet <= 0:
                            return []
                        self._cond.wait(quiet)  # a request may come first: idle work waits for a quiet moment
                        continue
                    self._cond.wait()
                deadline = time.monotonic() + self.max_wait_s
                while len(self._waiting) < self.max_batch_size and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            if self._stopping:
                return None
            room = self.max_batch_size - len(self._running)
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _loop(self) -> None:
        while (newcomers := self._take()) is not None:
            if not newcomers and not self._running and self._idle_work is not None:
                self._advance_idle_work()
                continue
            self._admit(newcomers)
            self._drop_gone()
            if self._running:
                self._step()
            self._last_busy = time.monotonic()
        self._fail(list(self._waiting) + self._running, ShuttingDown("the server stopped before answering"))
        self._waiting.clear()

    def _advance_idle_work(self) -> None:
        try:
            next(self._idle_work)
        except StopIteration:
            self._idle_work = None
        except Exception:  # background work must never stop the server
            log.exception("idle work failed; dropped")
            self._idle_work = None

    def _admit(self, jobs: list[Job]) -> None:
        alive = [job for job in jobs if not job.gone]
        self.stats.abandoned += len(jobs) - len(alive)
        if not alive:
            return
        started = time.perf_counter()
        try:
            self.batch.admit([job.seq for job in alive])
        except Exception as exc:  # e.g. a prompt the model cannot take: fail that request, not its neighbours
            self.batch.drop([job.seq for job in alive])  # those admitted before the failure leave again
            if len(alive) == 1:
                self._fail(alive, exc)
            else:
                for job in alive:  # one at a time: only the prompt that cannot be read fails
                    self._admit([job])
            return
        elapsed = time.perf_counter() - started
        admitted = time.time_ns()
        for job in alive:
            job.seq.admitted_ns = admitted
        self.stats.prefills += 1
        self.stats.prompt_tokens += sum(len(job.seq.prompt_ids) for job in alive)
        self.stats.prompt_tokens_cached += sum(job.seq.cached_tokens for job in alive)
        self.stats.prefill_s += elapsed
        self.stats.generate_s += elapsed
        self._set_running(self._running + alive)

    def _drop_gone(self) -> None:
        gone = [job for job in self._running if job.gone]
        if gone:
            self.batch.drop([job.seq for job in gone])
            self._set_running([job for job in self._running if not job.gone])
            self.stats.abandoned += len(gone)

    def _step(self) -> None:
        rows = len(self._running)
        before = sum(len(job.seq.tokens) for job in self._running)
        started = time.perf_counter()
        try:
            finished = self.batch.step()
        except Exception as exc:  # a failed forward pass fails its rows, never the server
            self.batch.drop([job.seq for job in self._running])
            self._fail(self._running, exc)
            self._set_running([])
            return
        self.stats.generate_s += time.perf_counter() - started
        self.stats.steps += 1
        self.stats.batch_sizes[rows] += 1
        self.stats.tokens += sum(len(job.seq.tokens) for job in self._running) - before
        ended = {id(seq) for seq in finished}
        now = time.time_ns()
        for job in self._running:
            seq = job.seq
            if seq.first_token_ns is None and (seq.tokens or id(seq) in ended):
                seq.first_token_ns = now
            if id(seq) not in ended:
                continue
            seq.finished_ns = now
            if seq.error is None:
                job.finish(seq)
            else:
                self._fail([job], GenerationFailed(seq.error))
        self._set_running([job for job in self._running if id(job.seq) not in ended])

    def _set_running(self, jobs: list[Job]) -> None:
        self._running = jobs
        self.stats.running = len(jobs)

    def _fail(self, jobs: list[Job], exc: BaseException) -> None:
        self.stats.failed += len(jobs)
        for job in jobs:
            job.finish(exc)
