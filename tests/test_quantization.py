"""int8 weights and activations (``core.quantization``) against the float32 product they replace, and the property
that makes them servable: a row's output does not depend on the rows batched with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core import quantization

pytestmark = pytest.mark.skipif(bool(quantization.available()), reason=str(quantization.available()))


def quantized(in_features: int, out_features: int, bias: bool, seed: int) -> tuple[nn.Linear, nn.Module]:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    return linear, quantization.Int8Linear(linear)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bias", [True, False])
def test_an_int8_product_is_within_a_few_percent_of_float32(seed, bias):
    linear, int8 = quantized(96, 160, bias, seed)
    x = torch.randn(7, 96) * (seed + 1)
    expected, out = linear(x), int8(x)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert (out - expected).abs().max() <= 0.05 * expected.abs().max()
    assert int8.weight.device.type == "meta"  # the float32 weight is not kept beside the int8 one


@pytest.mark.parametrize("seed", range(3))
def test_a_row_gets_the_same_bits_alone_or_in_any_batch(seed):
    """fbgemm quantizes its whole input with one scale; Int8Linear makes every row span the same range, so an
    answer never depends on its neighbours, however far their magnitudes are from its own."""
    _, int8 = quantized(64, 48, True, seed)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(9, 64, generator=generator) * torch.logspace(-3, 3, 9)[:, None]  # magnitudes 1e-3 .. 1e3
    rows[4] = 0.0  # an all-zero row too
    batched = int8(rows)
    for i in range(len(rows)):
        assert torch.equal(int8(rows[i : i + 1]), batched[i : i + 1]), f"row {i} changed with its batch"
    order = torch.randperm(len(rows), generator=generator)
    assert torch.equal(int8(rows[order]), batched[order])
    assert torch.isfinite(batched).all()


def test_quantizing_a_model_replaces_every_linear_and_keeps_a_tied_embedding(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    embedding = model.get_input_embeddings().weight.detach().clone()
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert quantization.quantize_linears(model) == linears
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert torch.equal(model.get_input_embeddings().weight, embedding)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
