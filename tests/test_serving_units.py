"""Serving parts without a model: the scoring protocol, settings from the environment, and the batcher's scheduling
(with a stand-in generate function, so batch composition is observable)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving import protocol
from serving.engine import Batcher, Generated, Overloaded
from serving.settings import Settings


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


class RecordingGenerate:
    """Stands in for the model: records each batch and can be held to let requests pile up."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items):
        self.release.wait(10)
        prompts = [p for p, _ in items]
        if "boom" in prompts:
            raise RuntimeError("generation failed")
        self.batches.append(prompts)
        return [Generated(text=p.upper(), tokens=len(p)) for p in prompts]


async def with_batcher(generate, coro, **limits):
    batcher = Batcher(generate, **{"max_batch_size": 8, "max_wait_ms": 50, "max_queue": 16, **limits})
    batcher.start()
    try:
        return await coro(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_generate_call():
    generate = RecordingGenerate()

    async def scenario(batcher):
        return await asyncio.gather(*[batcher.submit(f"q{i}", {}) for i in range(6)])

    results = asyncio.run(with_batcher(generate, scenario))
    assert [r.text for r in results] == [f"Q{i}" for i in range(6)]
    assert generate.batches == [[f"q{i}" for i in range(6)]]


def test_a_full_queue_refuses_at_once():
    generate = RecordingGenerate()
    generate.release.clear()  # the first batch blocks: later requests queue up

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit("first", {}))
        await asyncio.sleep(0.1)  # let the worker take "first" into a (blocked) batch
        queued = [asyncio.ensure_future(batcher.submit(f"q{i}", {})) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit("one too many", {})
        generate.release.set()
        return await asyncio.gather(first, *queued), batcher.stats

    results, stats = asyncio.run(with_batcher(generate, scenario, max_batch_size=1, max_queue=2))
    assert [r.text for r in results] == ["FIRST", "Q0", "Q1"] and stats.rejected == 1


def test_a_caller_that_gave_up_frees_its_slot():
    generate = RecordingGenerate()
    generate.release.clear()

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit("first", {}))
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit("impatient", {}), 0.05)
        kept = asyncio.ensure_future(batcher.submit("kept", {}))
        generate.release.set()
        return await asyncio.gather(first, kept)

    asyncio.run(with_batcher(generate, scenario))
    assert all("impatient" not in batch for batch in generate.batches)


def test_a_failed_generate_fails_its_batch_and_the_batcher_goes_on():
    generate = RecordingGenerate()

    async def scenario(batcher):
        with pytest.raises(RuntimeError, match="generation failed"):
            await batcher.submit("boom", {})
        return await batcher.submit("after", {})

    assert asyncio.run(with_batcher(generate, scenario)).text == "AFTER"


def test_a_plain_model_folder_is_served_without_importing_mlflow_or_langchain(tmp_path):
    import subprocess
    import sys

    from .test_model_families import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path / "tiny")
    code = (
        "import asyncio, sys\n"
        "from serving.app import ServingState\n"
        "from serving.settings import Settings\n"
        "state = ServingState(Settings(model_uri=sys.argv[1]))\n"
        "asyncio.run(state.load())\n"
        "assert state.ready, state.error\n"
        "print('chat_format=' + state.loaded.chat_format)\n"
        # (boto3 is left out: accelerate imports it whenever it is installed; the export image will not have it)
        "print('imported=' + ','.join(m for m in ('mlflow', 'langchain_core') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "chat_format=plain" in out.stdout  # no chat template in the folder: a plain prompt
    assert "imported=\n" in out.stdout, out.stdout
