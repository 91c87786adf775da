"""Attention over the batch's KV cache, in transformers' attention-function contract (``kernels`` registers it with
``AttentionInterface``; ``serving.engine.lean`` calls it directly).

Attention over a batch of single new tokens is a few hundred kilobytes of work, yet ``scaled_dot_product_attention``
with a mask spends 0.12 ms (float32) to 0.65 ms (bfloat16) per layer on it. ``attention`` does it with two batched
matrix products that read the key/value heads shared by a group of query heads once (no ``repeat_kv`` copy); prompts
(more than one query position) go through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function contract: query [batch, heads, q, dim], key/value [batch, kv_heads, kv, dim],
    an additive or boolean mask broadcastable to [batch, 1, q, kv]; returns ([batch, q, heads, dim], None)."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    if q_len > 1:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scale, enable_gqa=kv_heads != heads
        )
        return out.transpose(1, 2), None
    grouped = query.view(batch, kv_heads, heads // kv_heads, dim)  # the query heads that share one key/value head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scale  # [batch, kv_heads, group, kv]
    if attention_mask is not None:
        mask = attention_mask[:, :, :1]  # [batch, 1, 1, kv]: broadcasts over the group of query heads
        hidden = ~mask if mask.dtype == torch.bool else None
        scores = scores + mask if hidden is None else scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(weights, value)  # [batch, kv_heads, group, dim]
    return out.view(batch, 1, heads, dim), None
