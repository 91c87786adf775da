"""The lean forward pass of the Llama family (serving.engine.lean) against transformers' own, on tiny random models
of each family it takes: the same logits, bit for bit, at every step of a batch that requests join and leave, in
every CPU dtype the server offers; and the families it does not take keep transformers' forward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from serving.engine import Sequence, kernels
from serving.engine.decoding import DecodeBatch
from serving.engine.lean import supports

from .test_engine_parts import needs_onednn

TINY = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}


def tiny(family: str, **extra) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **{**TINY, **HEADS, **extra})  # extra may replace a size
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def logits_of_every_step(model: nn.Module) -> list[torch.Tensor]:
    """Four prompts of different lengths, two joining after two steps, decoded greedily to 12 tokens: each step's
    next-token logits."""
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (n,), generator=generator).tolist() for n in (9, 17, 4, 23)]
    sequences = [Sequence(prompt_ids=p, max_new_tokens=12 - 3 * i) for i, p in enumerate(prompts)]
    batch = DecodeBatch(model, pad_token_id=0, eos_token_ids=set())
    batch.admit(sequences[:2])
    seen = []
    for step in range(40):
        if step == 2:
            batch.admit(sequences[2:])
        if not len(batch):
            break
        seen.append(batch.logits[: len(batch)].clone())
        batch.step()
    return seen


DTYPES = [torch.float32, torch.bfloat16, torch.int8]
FAMILIES = [("llama", {}), ("qwen2", {"use_sliding_window": False}), ("mistral", {"sliding_window": None})]


@needs_onednn
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("family,extra", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_the_lean_forward_pass_gives_transformers_logits_to_the_bit(family, extra, dtype):
    model = tiny(family, **extra)
    assert supports(model) is None
    module_path = kernels.prepare(copy.deepcopy(model), dtype, lean=False)
    lean = kernels.prepare(copy.deepcopy(model), dtype, native=False)  # bfloat16's native step: tests/test_native.py
    assert not hasattr(module_path, "serving_step") and hasattr(lean, "serving_step")
    expected, got = logits_of_every_step(module_path), logits_of_every_step(lean)
    assert len(got) == len(expected) > 10
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert torch.equal(a, b), f"step {step}: logits differ by {(a - b).abs().max().item()}"


@needs_onednn
def test_the_decoder_runs_four_products_a_layer_with_every_parameter_kept():
    model = tiny("llama")
    count = kernels.parameters(model)
    kernels.prepare(model, torch.bfloat16)
    packed = [m for m in model.modules() if isinstance(m, kernels.PackedLinear)]
    assert len(packed) == 4 * TINY["num_hidden_layers"] + 1  # q/k/v, o, gate/up, down; and the output layer
    assert not hasattr(model.model.layers[0].self_attn, "q_proj")  # one copy of the weights, the stacked one
    assert kernels.parameters(model) == count
    assert any(line.startswith("lean forward pass (2 layers") for line in kernels.describe(model))


@pytest.mark.parametrize(
    "family,extra,reason",
    [
        ("llama", {"hidden_act": "gelu"}, "activation 'gelu', not silu"),
        ("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rotary type 'dynamic'"),
        ("qwen3", {}, "model type 'qwen3' is not one of"),
    ],
)
def test_other_models_keep_transformers_forward_pass_and_say_why(family, extra, reason):
    model = tiny(family, **extra)
    assert reason in supports(model)
    kernels.prepare(model, torch.float32)
    assert not hasattr(model, "serving_step")
    assert hasattr(model.model.layers[0].self_attn, "q_proj")


def test_a_stacked_layer_gives_each_projection_its_own_output():
    from serving.engine.lean import stacked

    torch.manual_seed(0)
    parts = [nn.Linear(8, 5), nn.Linear(8, 3, bias=False), nn.Linear(8, 4)]
    x = torch.randn(2, 8)
    with torch.no_grad():
        together, apart = stacked(*parts)(x), torch.cat([p(x) for p in parts], dim=-1)
        assert torch.allclose(together, apart, rtol=0, atol=1e-6)  # bits: the packed products (above) promise those
        assert stacked(*parts[1:2]).bias is None
