"""Serving parts without a model: the scoring protocol, settings from the environment, and the engine's scheduling
(with a stand-in decode batch, so who is admitted, dropped or refused, and when, is observable)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from serving.engine import Batcher, GenerationFailed, Overloaded, Sequence
from serving.http import protocol
from serving.http.routes.invocations import csv_as_json
from serving.http.settings import Settings


class TestProtocol:
    @pytest.mark.parametrize(
        "payload,questions",
        [
            ({"dataframe_split": {"columns": ["question"], "data": [["a"], ["b"]]}}, ["a", "b"]),
            ({"dataframe_split": {"columns": ["id", "question"], "data": [[1, "a"]]}}, ["a"]),
            ({"dataframe_records": [{"question": "a"}, {"question": "b"}]}, ["a", "b"]),
            ({"instances": ["a", "b"]}, ["a", "b"]),
            ({"inputs": "a"}, ["a"]),
            ({"inputs": {"question": "a"}}, ["a"]),
            ({"inputs": [{"question": "a"}]}, ["a"]),
        ],
    )
    def test_every_mlflow_format(self, payload, questions):
        assert protocol.parse_invocation(payload) == (questions, {})

    def test_params_pass_through(self):
        _, params = protocol.parse_invocation({"inputs": ["a"], "params": {"max_new_tokens": 3}})
        assert params == {"max_new_tokens": 3}

    @pytest.mark.parametrize(
        "payload,message",
        [
            ([], "JSON object"),
            ({}, "exactly one of"),
            ({"inputs": ["a"], "instances": ["b"]}, "exactly one of"),
            ({"inputs": ["a"], "extra": 1}, "unknown keys"),
            ({"dataframe_split": {"columns": ["question"]}}, "dataframe_split must be"),
            ({"dataframe_records": ["a"]}, "dataframe_records must be"),
            ({"inputs": [1, 2]}, "unsupported input int"),
            ({"inputs": ["a"], "params": [1]}, "params must be an object"),
        ],
    )
    def test_bad_payloads_say_what_is_expected(self, payload, message):
        with pytest.raises(protocol.ProtocolError, match=message):
            protocol.parse_invocation(payload)

    @pytest.mark.parametrize(
        "body,questions",
        [
            (b"question\na\nb\n", ["a", "b"]),
            (b'id,question\r\n1,"a, with a comma"\r\n', ["a, with a comma"]),
            (b'prompt\n"two\nlines"\n', ["two\nlines"]),
        ],
    )
    def test_a_csv_body_is_the_dataframe_split_it_describes(self, body, questions):
        assert protocol.parse_invocation(json.loads(csv_as_json(body))) == (questions, {})

    @pytest.mark.parametrize("body", [b"", b"question\n"])
    def test_a_csv_without_rows_is_refused_as_a_split_without_data(self, body):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_invocation(json.loads(csv_as_json(body)))

    def test_a_csv_that_is_not_utf8_says_so(self):
        with pytest.raises(ValueError, match="the text/csv body cannot be read"):
            csv_as_json(b"question\n\xff\n")


def test_settings_from_environment():
    environ = {
        "MLFLOW_MODEL_URI": "models:/m@champion",
        "SERVING_MAX_BATCH_SIZE": "4",
        "SERVING_CORS_ORIGINS": "http://a, http://b",
        "SERVING_API_KEY": "k-123456",
    }
    settings = Settings.from_env(environ, port=6000)
    assert settings.model_uri == "models:/m@champion" and settings.port == 6000
    assert settings.max_batch_size == 4 and settings.cors_origins == ["http://a", "http://b"]
    assert "k-123456" not in repr(settings)  # a SecretStr never prints


class StandInBatch:
    """Stands in for serving.engine.decoding.DecodeBatch (same four calls), so scheduling is observable: each step gives
    every row one token (its count); a row ends at its max_new_tokens. Prompt [666] fails at admission (with whatever
    is admitted beside it), [999] makes a step fail, [777] is a row that fails alone (as a row whose logits went
    non-finite does). Each step takes a permit, so a test can hold the batch still."""

    def __init__(self) -> None:
        self.rows: list[Sequence] = []
        self.admissions: list[list[list[int]]] = []
        self.dropped: list[Sequence] = []
        self.sizes: list[int] = []
        self.permits = threading.Semaphore(10_000)

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, seqs: list[Sequence]) -> None:
        if any(s.prompt_ids == [666] for s in seqs):
            raise ValueError("cannot read this prompt")
        self.admissions.append([s.prompt_ids for s in seqs])
        self.rows += seqs

    def drop(self, seqs: list[Sequence]) -> None:
        self.dropped += seqs
        self.rows = [r for r in self.rows if all(r is not s for s in seqs)]

    def step(self) -> list[Sequence]:
        assert self.permits.acquire(timeout=10), "the test never released this step"
        if any(r.prompt_ids == [999] for r in self.rows):
            raise RuntimeError("the forward pass failed")
        self.sizes.append(len(self.rows))
        for row in self.rows:
            if row.prompt_ids == [777]:
                row.fail("this row's scores are not finite")
                continue
            row.tokens.append(len(row.tokens) + 1)
            if row.on_token:
                row.on_token(row.tokens[-1])
            if len(row.tokens) >= row.max_new_tokens:
                row.finish_reason = "length"
        finished = [r for r in self.rows if r.finish_reason]
        self.rows = [r for r in self.rows if not r.finish_reason]
        return finished


def request(prompt: int, max_new_tokens: int = 3) -> Sequence:
    return Sequence(prompt_ids=[prompt], max_new_tokens=max_new_tokens)


async def until(predicate, timeout_s: float = 10) -> None:
    """Wait for the generation thread to reach a state the test can observe."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the engine never got there"
        await asyncio.sleep(0.001)


async def with_batcher(batch, scenario, **limits):
    batcher = Batcher(batch, **{"max_batch_size": 8, "max_wait_ms": 50, "max_queue": 16, **limits})
    batcher.start()
    try:
        return await scenario(batcher)
    finally:
        await batcher.stop()


def test_a_burst_is_prefilled_together_and_each_caller_gets_its_own_answer():
    batch = StandInBatch()

    async def scenario(batcher):
        return await asyncio.gather(*[batcher.submit(request(i, max_new_tokens=i + 1)) for i in range(6)])

    results = asyncio.run(with_batcher(batch, scenario))
    assert [r.tokens for r in results] == [list(range(1, i + 2)) for i in range(6)]
    assert batch.admissions == [[[i] for i in range(6)]] and batch.sizes[0] == 6


def test_a_request_joins_the_running_batch_at_the_next_step():
    batch = StandInBatch()
    batch.permits = threading.Semaphore(5)

    async def scenario(batcher):
        long = asyncio.ensure_future(batcher.submit(request(1, max_new_tokens=50)))
        await until(lambda: len(batch.sizes) == 5)
        short = batcher.enqueue(request(2, max_new_tokens=2)).done  # queued now, before any step is released
        batch.permits.release(10)
        await short
        assert not long.done()  # the short one finished while the long one was still generating
        batch.permits.release(100)
        return await long, short.result()

    long, short = asyncio.run(with_batcher(batch, scenario, max_wait_ms=0))
    assert len(long.tokens) == 50 and short.tokens == [1, 2]
    assert 2 in batch.sizes and batch.admissions == [[[1]], [[2]]]


def test_a_full_queue_refuses_at_once_and_the_others_are_served():
    batch = StandInBatch()
    batch.permits = threading.Semaphore(0)  # the first step waits: later requests stay queued

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit(request(1)))
        await until(lambda: len(batch) == 1)
        queued = [asyncio.ensure_future(batcher.submit(request(i))) for i in (2, 3)]
        await until(lambda: batcher.queue_depth == 2)
        with pytest.raises(Overloaded, match="2 requests are already waiting"):
            await batcher.submit(request(4))
        for _ in range(20):
            batch.permits.release()
        return await asyncio.gather(first, *queued), batcher.stats

    results, stats = asyncio.run(with_batcher(batch, scenario, max_batch_size=1, max_queue=2))
    assert [r.prompt_ids for r in results] == [[1], [2], [3]] and stats.rejected == 1


def test_callers_that_give_up_free_their_place_waiting_or_running():
    batch = StandInBatch()
    batch.permits = threading.Semaphore(0)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit(request(1, max_new_tokens=100)))
        await until(lambda: len(batch) == 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(request(2)), 0.05)  # gives up while waiting
        running.cancel()  # gives up while generating
        await until(running.done)  # its job is marked gone once the cancellation has run
        kept = asyncio.ensure_future(batcher.submit(request(3)))
        batch.permits.release(10)
        return await kept, batcher.stats

    kept, stats = asyncio.run(with_batcher(batch, scenario, max_batch_size=1))
    assert kept.tokens == [1, 2, 3]
    assert [s.prompt_ids for s in batch.dropped] == [[1]]  # left the running batch before the next step
    assert [[2]] not in batch.admissions and stats.abandoned == 2


def test_a_failed_step_fails_its_rows_and_the_engine_goes_on():
    async def scenario(batcher):
        with pytest.raises(RuntimeError, match="forward pass failed"):
            await batcher.submit(request(999))
        return await batcher.submit(request(5))

    assert asyncio.run(with_batcher(StandInBatch(), scenario)).tokens == [1, 2, 3]


def test_a_prompt_that_cannot_be_admitted_fails_alone():
    batch = StandInBatch()
    batch.permits = threading.Semaphore(0)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit(request(1)))
        await until(lambda: len(batch) == 1)
        bad = asyncio.ensure_future(batcher.submit(request(666)))
        await until(lambda: batcher.queue_depth == 1)
        batch.permits.release(5)  # the running step ends; the bad prompt is admitted next, and fails
        with pytest.raises(ValueError, match="cannot read this prompt"):
            await bad
        return await running

    assert asyncio.run(with_batcher(batch, scenario, max_wait_ms=0)).tokens == [1, 2, 3]


def test_a_row_that_fails_fails_its_own_request_only():
    async def scenario(batcher):
        jobs = [batcher.submit(request(p, max_new_tokens=4)) for p in (1, 777, 2)]
        return await asyncio.gather(*jobs, return_exceptions=True), batcher.stats

    (first, failed, second), stats = asyncio.run(with_batcher(StandInBatch(), scenario))
    assert isinstance(failed, GenerationFailed) and "not finite" in str(failed)
    assert first.tokens == second.tokens == [1, 2, 3, 4] and stats.failed == 1


def test_a_prompt_that_cannot_be_read_fails_alone_in_a_burst():
    """A burst is prefilled together; when that prefill fails, each request is admitted on its own, so only the
    prompt that cannot be read fails."""
    batch = StandInBatch()

    async def scenario(batcher):
        jobs = [batcher.submit(request(p)) for p in (1, 666, 2, 3)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(with_batcher(batch, scenario))
    assert isinstance(results[1], ValueError) and "cannot read this prompt" in str(results[1])
    assert [r.tokens for i, r in enumerate(results) if i != 1] == [[1, 2, 3]] * 3
    assert batch.admissions == [[[1]], [[2]], [[3]]]


def test_a_stream_yields_tokens_as_they_come_and_an_early_close_frees_the_row():
    batch = StandInBatch()

    async def scenario(batcher):
        whole = [token async for token in batcher.stream(batcher.enqueue(request(1, max_new_tokens=4), stream=True))]
        batch.permits = threading.Semaphore(2)
        tokens = batcher.stream(batcher.enqueue(request(2, max_new_tokens=100), stream=True))
        first = [await anext(tokens), await anext(tokens)]
        await tokens.aclose()  # the client went away
        batch.permits.release(5)
        await until(lambda: batch.dropped)
        return whole, first

    whole, first = asyncio.run(with_batcher(batch, scenario))
    assert whole == [1, 2, 3, 4] and first == [1, 2]
    assert [s.prompt_ids for s in batch.dropped] == [[2]]


def test_a_plain_model_folder_is_served_without_importing_mlflow_or_langchain(tmp_path):
    import subprocess
    import sys

    from .test_model_families import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path / "tiny")
    code = (
        "import asyncio, sys\n"
        "from serving.http.app import ServingState\n"
        "from serving.http.settings import Settings\n"
        "state = ServingState(Settings(model_uri=sys.argv[1]))\n"
        "asyncio.run(state.load())\n"
        "assert state.ready, state.error\n"
        "print('chat_format=' + state.engine.describe()['chat_format'])\n"
        # (boto3 is left out: accelerate imports it whenever it is installed; the export image will not have it)
        "print('imported=' + ','.join(m for m in ('mlflow', 'langchain_core') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "chat_format=plain" in out.stdout  # no chat template in the folder: a plain prompt
    assert "imported=\n" in out.stdout, out.stdout
