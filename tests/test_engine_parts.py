"""The pieces that make a decoding step fast, checked without the real model: packed linear layers and the batch's
attention against what they replace, bucketed shapes, the dtype agreement arithmetic, device and dtype settings,
and background work that runs only while the engine is idle."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from serving.engine import Batcher, agreement, kernels, sampling
from serving.engine.graphs import column_bucket, row_bucket
from serving.http.settings import Settings

from .test_serving_units import StandInBatch, request, until

needs_onednn = pytest.mark.skipif(
    not kernels.can_pack(nn.Linear(2, 2), torch.float32), reason="this torch build has no oneDNN packing on CPU"
)


@needs_onednn
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_a_packed_linear_computes_what_the_linear_did(dtype, tolerance):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(5, 64)
    expected = linear(x)
    packed = kernels.PackedLinear(linear, dtype)
    out = packed(x)
    assert out.dtype == torch.float32  # float32 activations in, float32 out, whatever the weights' dtype
    assert torch.allclose(out, expected, rtol=tolerance, atol=tolerance)
    assert packed.weight.device.type == "meta" and packed.weight.shape == (96, 64)  # no second dense copy


@needs_onednn
def test_emulated_bfloat16_gives_what_bfloat16_products_give(monkeypatch):
    """On a CPU without bfloat16 instructions the packed product runs in float32 on bfloat16-rounded values: the
    answer a native bfloat16 product gives (float32 accumulation, output rounded to bfloat16), not float32's."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(5, 64)
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: False)
    emulated = kernels.PackedLinear(linear, torch.bfloat16)
    rounded = F.linear(x.bfloat16().float(), linear.weight.bfloat16().float(), linear.bias.bfloat16().float())
    assert emulated.emulated and emulated.packed.dtype == torch.float32
    assert torch.allclose(emulated(x), rounded.bfloat16().float(), rtol=1e-2, atol=1e-2)
    assert not torch.equal(emulated(x), linear(x))  # bfloat16's rounding, not float32's values
    assert "emulated in float32" in repr(emulated)


@needs_onednn
def test_packing_a_model_keeps_its_parameter_count_and_says_what_it_did():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4, bias=False)))
    count = sum(p.numel() for p in model.parameters())
    assert kernels.pack_linears(model, torch.bfloat16) == 2
    assert isinstance(model[2][0], kernels.PackedLinear)
    assert kernels.parameters(model) == count


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4)])
def test_the_batch_attention_matches_scaled_dot_product_attention(heads, kv_heads):
    torch.manual_seed(0)
    batch, length, dim = 3, 11, 16
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    allowed = torch.rand(batch, length) > 0.3
    allowed[:, -1] = True  # every row sees its own new token
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    out, _ = kernels.attention(nn.Module(), query, key, value, additive, scaling=dim**-0.5)
    repeat = heads // kv_heads
    expected = F.scaled_dot_product_attention(
        query, key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1), attn_mask=additive
    )
    assert out.shape == (batch, 1, heads, dim)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-5)


def test_buckets_round_rows_to_powers_of_two_and_columns_to_128_within_capacity():
    assert [row_bucket(n, 256) for n in (1, 2, 3, 16, 17, 200)] == [1, 2, 4, 16, 32, 256]
    assert row_bucket(40, 48) == 48
    assert [column_bucket(n, 4096) for n in (1, 128, 129, 300)] == [128, 128, 256, 384]
    assert column_bucket(300, 200) == 200


def test_agreement_counts_identical_answers_and_where_the_others_first_differ():
    reference = [[1, 2, 3], [1, 2, 3, 4], [5, 6], [7]]
    other = [[1, 2, 3], [1, 2, 9, 4], [5, 6, 8], [8]]
    assert agreement.compare(reference, other) == {"questions": 4, "identical": 1, "first_difference_mean": 1.3}
    assert agreement.compare([[1]], [[1]])["first_difference_mean"] is None


def test_dtype_and_device_come_from_the_environment_and_are_checked():
    settings = Settings.from_env({"SERVING_DTYPE": "bfloat16", "SERVING_DEVICE": "cpu"}, model_uri="m")
    assert (settings.dtype, settings.device) == ("bfloat16", "cpu")
    assert Settings(model_uri="m").dtype is None  # the model's own
    assert Settings(model_uri="m").batch_size_for("cpu") == 64
    assert Settings(model_uri="m").batch_size_for("cuda") == 256
    assert Settings(model_uri="m", max_batch_size=8).batch_size_for("cuda") == 8
    with pytest.raises(ValidationError, match="float32"):
        Settings(model_uri="m", dtype="float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: asking for one is not an error")
def test_asking_for_cuda_without_a_gpu_says_what_to_use():
    with pytest.raises(RuntimeError, match="sees no CUDA GPU; use --device cpu or auto"):
        kernels.resolve_device("cuda")
    assert kernels.resolve_device("auto").type == "cpu"


def test_idle_work_advances_only_while_no_request_is_waiting_or_running():
    batch = StandInBatch()
    steps: list[int] = []
    proceed = threading.Event()

    def work():
        for _ in range(1000):
            steps.append(len(batch.rows))  # the rows running while the idle work took its step
            proceed.wait()
            yield

    async def scenario():
        batcher = Batcher(batch, max_batch_size=4, max_wait_ms=0, max_queue=8)
        batcher.start()
        try:
            batcher.when_idle(work())
            await until(lambda: len(steps) >= 1)
            proceed.set()
            answer = await batcher.submit(request(1, max_new_tokens=3))
            await until(lambda: len(steps) > 3)
            return answer
        finally:
            await batcher.stop()

    answer = asyncio.run(scenario())
    assert answer.tokens == [1, 2, 3]
    assert set(steps) == {0}  # never a step of idle work while a request had rows in the batch


def test_idle_work_waits_for_a_quiet_moment_so_back_to_back_requests_never_wait_for_it():
    """A client that sends its next request as soon as an answer comes: no step of idle work between its requests
    (the grace is 2 s here, far above the gap), and the work goes on once the client has been quiet that long."""
    batch = StandInBatch()
    steps: list[float] = []

    def work():
        for _ in range(1000):
            steps.append(time.monotonic())
            yield

    async def scenario():
        batcher = Batcher(batch, max_batch_size=4, max_wait_ms=0, max_queue=8, idle_grace_s=2.0)
        batcher.start()
        try:
            await batcher.submit(request(1, max_new_tokens=2))
            batcher.when_idle(work())
            answers = [await batcher.submit(request(1, max_new_tokens=2)) for _ in range(5)]
            during = len(steps)
            finished = time.monotonic()
            await until(lambda: len(steps) >= 1)
            return answers, during, steps[0] - finished
        finally:
            await batcher.stop()

    answers, during, waited = asyncio.run(scenario())
    assert [a.tokens for a in answers] == [[1, 2]] * 5
    assert during == 0
    assert waited >= 1.5  # it went on only after the quiet moment (2 s after the last step, less the answer's way)


def test_sampling_settings_that_can_only_pick_the_top_token_are_greedy():
    vocab = 49152
    assert sampling.is_greedy(0.0, 1.0, vocab) and sampling.is_greedy(1e-300, 1.0, vocab)
    assert sampling.is_greedy(1.0, 5e-324, vocab) and sampling.is_greedy(1.0, 0.99 / vocab, vocab)
    assert not sampling.is_greedy(1e-5, 1.0, vocab) and not sampling.is_greedy(1.0, 1.01 / vocab, vocab)


def test_one_rows_scores_never_reach_the_draw_of_the_others():
    """Huge scores at the smallest sampling temperature, NaN, +inf, and a row masked to nothing, beside rows that
    sample and a greedy row: the draw runs, the greedy row takes its top token, the broken rows are named."""
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    logits[1, 3] = 3e38  # large enough that dividing by the temperature would overflow
    logits[2, 4] = float("nan")
    logits[3, 5] = float("inf")
    logits[4] = float("-inf")
    rows = [SimpleNamespace(temperature=t, top_p=p) for t, p in [(0, 1), (1e-5, 1), (1, 1), (1, 1), (1, 1), (2, 0.9)]]
    chosen, failed = sampling.choose(logits.clone(), rows)
    assert sorted(failed) == [2, 3, 4] and all("not finite" in reason for reason in failed.values())
    assert chosen[0] == logits[0].argmax() and chosen[1] == 3
    assert 0 <= chosen[5] < 50
    _, skipped = sampling.choose(logits.clone(), rows, skip={4})
    assert sorted(skipped) == [2, 3]  # a row that ends anyway is not reported
