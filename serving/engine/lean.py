"""The forward pass of Llama-family models as plain tensor code, for the CPU's decoding steps and prefills.

transformers' module code spends a third of a batch-1 step on the CPU in Python between the kernels (module calls,
hooks, output dataclasses, the cache interface, rotary and mask helpers): about 11 of 30 ms, measured with
``torch.profiler`` on SmolLM2-135M in bfloat16. ``LeanStep`` computes the same forward pass in one loop over the
layers, with the same operations in the same order (so float32 answers keep their bits), and:

- **two products where the model has five.** A layer's query, key and value projections read the same input, and
  so do its MLP's gate and up projections: each group is one stacked, packed matrix (4 products a layer instead of
  7; 121 a step instead of 211 for SmolLM2). Every output column of a product is its own dot product, so stacking
  changes no value (``tests/test_lean.py`` compares logits bit for bit).
- **the rotary embedding once for queries and keys together**, with the sine's sign folded into a precomputed
  table (``x * cos + roll(x) * signed_sin`` is transformers' ``x * cos + rotate_half(x) * sin`` to the bit), and the
  cosine and sine computed once a step, not once a layer.
- **the KV cache written through its window** (``serving.engine.kvcache``), attention for one new token per row as
  ``serving.engine.attention`` does it, and the output layer for the last position only.

Which models: the Llama family as transformers implements it (``llama``, ``mistral`` without a sliding window,
``qwen2``): RMS norms, rotary positions with fixed frequencies, SiLU-gated MLP, no per-head norms. ``supports``
says why another is not, and it keeps transformers' own forward pass. The linear layers are whatever the device's
preparation makes them (``kernels.prepare``: oneDNN-packed float32 or bfloat16, int8).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from serving.engine.attention import attention

FAMILIES = ("llama", "mistral", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3")  # rotary types whose frequencies do not change with the sequence


def supports(model: nn.Module) -> str | None:
    """Why ``model``'s forward pass cannot run as a ``LeanStep`` (None: it can)."""
    config = model.config
    if config.model_type not in FAMILIES:
        return f"model type {config.model_type!r} is not one of {FAMILIES}"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r}, not silu"
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", None) not in STATIC_ROPE:
        return f"rotary type {getattr(rotary, 'rope_type', None)!r} is not one of {STATIC_ROPE}"
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        projections = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        projections += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if any(type(p) is not nn.Linear for p in projections):
            return "a layer's projections are not plain linear layers"
        if hasattr(attn, "q_norm") or getattr(attn, "sliding_window", None):
            return "per-head norms or a sliding window"
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if any(not type(n).__name__.endswith("RMSNorm") or not hasattr(n, "variance_epsilon") for n in norms):
            return "a layer's norms are not RMS norms"
    return None


def stacked(*linears: nn.Linear) -> nn.Linear:
    """One linear layer whose output is the outputs of ``linears`` side by side (a bias of zeros for those that have
    none, where the others have one)."""
    biased = any(linear.bias is not None for linear in linears)
    out = nn.Linear(linears[0].in_features, sum(x.out_features for x in linears), bias=biased, device="meta")
    out.weight = nn.Parameter(torch.cat([x.weight.detach() for x in linears]), requires_grad=False)
    if biased:
        bias = [x.weight.new_zeros(x.out_features) if x.bias is None else x.bias.detach() for x in linears]
        out.bias = nn.Parameter(torch.cat(bias), requires_grad=False)
    return out


class LeanLayer(nn.Module):
    def __init__(self, layer: nn.Module, fast: Callable[[nn.Linear], nn.Module]) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = fast(stacked(attn.q_proj, attn.k_proj, attn.v_proj))
        self.o = fast(attn.o_proj)
        self.gate_up = fast(stacked(mlp.gate_proj, mlp.up_proj))
        self.down = fast(mlp.down_proj)
        self.intermediate = mlp.gate_proj.out_features
        self.norm_in, self.norm_post = layer.input_layernorm, layer.post_attention_layernorm
        self.scaling = attn.scaling
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):  # the stacked copies replace them: one copy in memory
            delattr(attn, name)
        for name in ("gate_proj", "up_proj", "down_proj"):
            delattr(mlp, name)


def rms_norm(hidden: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """transformers' Llama RMS norm as one fused kernel: the same values to the bit in float32 (the activations'
    dtype here; tests/test_lean.py), where transformers' takes six operations."""
    return F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)


class LeanStep(nn.Module):
    """``model``'s forward pass over the batch's KV cache; built by ``kernels.prepare``, which makes each linear
    layer fast with ``fast``. Takes the decoder's projections out of ``model`` (they live here, stacked)."""

    def __init__(self, model: nn.Module, fast: Callable[[nn.Linear], nn.Module]) -> None:
        super().__init__()
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = nn.ModuleList(LeanLayer(layer, fast) for layer in model.model.layers)
        self._model = [model]  # not a submodule: the model owns this step, not the other way round

    def describe(self) -> str:
        return f"lean forward pass ({len(self.layers)} layers, q/k/v and gate/up stacked: 4 products a layer)"

    def rotation(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and the signed sine [rows, positions, 1, head dim] (transformers' rotary embedding, computed once)."""
        rotary = self._model[0].model.rotary_emb
        freqs = positions[..., None].float() * rotary.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * rotary.attention_scaling, emb.sin() * rotary.attention_scaling
        half = self.head_dim // 2
        signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.to(dtype)[:, :, None], signed.to(dtype)[:, :, None]

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """ids and positions [rows, new tokens], mask [rows, 1, new tokens, window columns] (additive), the
        ``serving.engine.kvcache.KVCache`` with its window set; the float32 logits of each row's last position."""
        model = self._model[0]
        rows, new = ids.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        hidden = model.model.embed_tokens(ids)
        cos, sin = self.rotation(positions, hidden.dtype)
        half = dim // 2
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(rms_norm(hidden, layer.norm_in)).view(rows, new, heads + 2 * kv_heads, dim)
            qk = qkv[:, :, : heads + kv_heads]
            qk = qk * cos + qk.roll(half, dims=-1) * sin
            query = qk[:, :, :heads].transpose(1, 2)
            key = qk[:, :, heads:].transpose(1, 2)
            value = qkv[:, :, heads + kv_heads :].transpose(1, 2)
            keys, values = cache.update(key, value, index)
            out, _ = attention(None, query, keys, values, mask, scaling=layer.scaling)
            hidden = hidden + layer.o(out.reshape(rows, new, heads * dim))
            gate, up = layer.gate_up(rms_norm(hidden, layer.norm_post)).split(layer.intermediate, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        last = rms_norm(hidden[:, -1], model.model.norm)
        return model.lm_head(last).float()
