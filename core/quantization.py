"""Weights in 8 bits on the CPU: ``quantize_linears(model)`` replaces every ``nn.Linear`` by an ``Int8Linear``.

The scheme is the one a CPU user of small models knows from llama.cpp's Q8_0 and torchao's dynamic int8: weights
quantized once, symmetrically, per output channel; activations quantized at every product, per row, and the product
accumulated in integers (fbgemm's ``quantized::linear_dynamic``, which PyTorch ships on every x86 and ARM CPU).

Per row matters. fbgemm derives one scale from the whole input it is handed, so a row's activations would be
quantized differently depending on which other requests share its batch, and an answer would depend on its
neighbours. ``Int8Linear`` therefore divides each row by its own largest magnitude and appends two constant columns,
+1 and -1, whose weights are zero: every row then spans exactly [-1, 1], the range fbgemm sees is the same for any
batch, and each row's output is its own product times its own scale. Integer accumulation is exact, so a row's
product has the same bits alone or in a batch of 64 (``tests/test_quantization.py`` checks it). A whole answer can
still differ with its batch where the float32 parts of a step (attention's sums vary in their last bit with the
batch's cache columns) move a value across one of the quantizer's rounding steps, as they can in bfloat16.

Measured on a 2-core AMD EPYC (AVX2, no AVX-512), one product per shape of SmolLM2-135M, against a oneDNN-packed
float32 product: the output layer (49,152 x 576) takes 2.5 ms against 10.0 ms at batch 1 and 8.2 against 20.3 ms at
16 rows; the small per-layer products are as fast as float32 or a little slower (the extra division and columns).
``torch._int_mm`` (2-20x slower than float32 there) and oneDNN's ``qlinear_pointwise`` (no faster, and 10% off
on AVX2) were tried and rejected. The relative error of one product is 1-2% of its largest output.

PyTorch 2.13 marks its quantized tensor types deprecated (pytorch/pytorch#184982) without a removal release; the
project pins torch, and ``available()`` says why int8 cannot run where a later torch lacks these kernels.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

SUPPORTED_ENGINES = ("x86", "fbgemm", "qnnpack")


def available() -> str | None:
    """Why int8 products cannot run in this torch (None: they can)."""
    engines = set(torch.backends.quantized.supported_engines)
    if not engines & set(SUPPORTED_ENGINES) or not hasattr(torch.ops.quantized, "linear_dynamic"):
        return f"this torch build ({torch.__version__}) has no quantized CPU engine (it has {sorted(engines)})"
    return None


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and per-row int8 activations; float32 in and out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        padded = torch.cat([weight, weight.new_zeros(self.out_features, 2)], dim=1)  # the +1/-1 columns' weights
        scales = (padded.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny).double()
        zeros = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 marks quantized tensors deprecated (removal not yet scheduled)
            warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
            qweight = torch.quantize_per_channel(padded, scales, zeros, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.bias = bias  # added after the row's scale is applied, in float32
        self.register_buffer("ends", torch.tensor([1.0, -1.0]), persistent=False)
        self.weight = torch.empty(weight.shape, dtype=torch.float32, device="meta")  # shape and dtype only

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights and activations"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        spanned = torch.cat([rows / scale, self.ends.expand(rows.shape[0], 2)], dim=1)
        out = torch.ops.quantized.linear_dynamic(spanned, self.packed, True) * scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features).to(dtype)


def quantize_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` by an ``Int8Linear``; returns how many. A tied input embedding
    keeps its own float32 tensor (only the output layer's product is quantized)."""
    if reason := available():
        raise RuntimeError(f"int8 weights need quantized CPU kernels: {reason}; serve float32 or bfloat16")
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child))
            count += 1
        else:
            count += quantize_linears(child)
    return count
