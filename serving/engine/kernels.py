"""What makes one decoding step fast on each device, applied once to a loaded model (``prepare``).

Measured on the 2-core reference CPU (SmolLM2-135M, batch of 16, one decoding step):
- The linear layers are most of a step, and ``F.linear`` (MKL) reaches a third of what oneDNN does with weights
  packed ahead of time into its blocked layout: 58 ms against 20 ms for the 211 matrix products of a float32 step.
  On CPU every ``nn.Linear`` is therefore replaced by ``PackedLinear``, which holds only the packed copy (its
  ``weight`` is a shape-and-dtype stand-in on the meta device; a tied input embedding keeps its own tensor).
- bfloat16 on CPU packs the linear layers' weights in bfloat16 (AVX512-BF16 products, half the bytes to read) and
  keeps the activations, norms, attention and KV cache in float32: faster than an all-bfloat16 model (1,191 against
  1,097 tokens/s at 64 rows) and later to diverge from float32 answers (22 tokens against 16 on average). On CUDA,
  bfloat16 is the whole model. A CPU without bfloat16 instructions (AVX2 only: oneDNN refuses to pack bfloat16 there)
  gets bfloat16's values in float32 products (``PackedLinear.emulated``): bfloat16's answers, float32's speed.
- int8 (CPU) replaces every linear layer by ``core.quantization.Int8Linear``: 8-bit weights per output channel,
  activations quantized per row, fbgemm's integer products; the rest of the step stays in float32.
- Attention for one new token per row is ``serving.engine.attention``, registered with transformers'
  ``AttentionInterface`` and selected on the model, so the model's own code calls it.
- On CPU, a Llama-family model's forward pass runs as ``serving.engine.lean.LeanStep``: the same operations without
  transformers' module code, the query/key/value and gate/up products stacked (4 products a layer instead of 7).
- In bfloat16 and int8 on CPU, decoding steps of a few rows run as ``serving.engine.native.NativeStep``: the whole
  step in one native loop (``step.c``) over plain bfloat16 weights, 3.1-3.3x the PyTorch step at one row on an AVX2
  CPU and about 3x on an AVX512-BF16 one, or over int8 weights, 3.4-3.7x fbgemm's step (docs/serving.md).
- ``torch.compile`` of the whole step was tried on this CPU and rejected: 27 to 40 s to compile one shape, then 100
  to 115 ms a step against 35 ms here.
- On CUDA the step is replayed from CUDA graphs (``serving.engine.graphs``), and what is left is the GPU running ~1,500
  small kernels a step (3.1 of 3.5 ms at batch 1 on an H200). ``fuse_elementwise`` compiles the chains of
  elementwise kernels that every layer repeats, the RMS norms and the rotary embedding, into one kernel each
  (``torch.compile`` with dynamic shapes: compiled once, for every batch shape). The rotary function is replaced in
  the model's modeling module, so every model of that family in the process uses the fused one.
"""

from __future__ import annotations

import torch
from torch import nn

from core.quantization import Int8Linear, quantize_linears
from serving.engine.attention import attention
from serving.engine.native import Weights

ATTENTION = "serving_batch"  # the name this module's attention is registered under in transformers


PACKABLE = (torch.float32, torch.bfloat16)
INT8 = torch.int8  # weights and activations in 8 bits (``core.quantization``), CPU only


def native_bfloat16() -> bool:
    """Whether oneDNN has bfloat16 products on this CPU (AVX512-BF16 or AVX-NE-CONVERT); without them it refuses to
    pack bfloat16 weights."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """``nn.Linear`` whose product runs on a oneDNN-packed copy of its weight in ``dtype`` (CPU only); inputs of
    another dtype are cast to it and the output cast back.

    bfloat16 on a CPU without bfloat16 instructions (AVX2 only) is emulated: the weight is rounded to bfloat16 and
    packed in float32, each input and output rounded to bfloat16 as the native product would, so the answers are
    bfloat16's (what the agreement with float32 and the promote gate judge) with float32's speed and memory."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.emulated = dtype == torch.bfloat16 and not native_bfloat16()
        self.compute = torch.float32 if self.emulated else dtype  # the dtype the packed product runs in
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.to(dtype).to(self.compute), None)
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype).to(self.compute)
        self.weight = torch.empty(weight.shape, dtype=dtype, device="meta")  # shape and dtype, no second copy

    def extra_repr(self) -> str:
        emulated = ", emulated in float32" if self.emulated else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}{emulated}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x.to(self.dtype).to(self.compute)
        out = torch.ops.mkldnn._linear_pointwise(inputs, self.packed, self.bias, "none", [], "")
        return out.to(self.dtype).to(x.dtype)


def can_pack(model: nn.Module, dtype: torch.dtype) -> bool:
    """oneDNN packing applies on CPU, in float32 or bfloat16, where this torch build has oneDNN."""
    return (
        next(model.parameters()).device.type == "cpu"
        and dtype in PACKABLE
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def pack_linears(module: nn.Module, dtype: torch.dtype) -> int:
    """Replace every ``nn.Linear`` under ``module`` by a ``PackedLinear`` in ``dtype``; returns how many."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, PackedLinear(child, dtype))
            count += 1
        else:
            count += pack_linears(child, dtype)
    return count


def register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, attention)


def load_dtype(device: torch.device, dtype: str) -> str:
    """The dtype to load weights in for serving ``dtype`` on ``device``: float32 where the linear layers get
    packed in ``dtype`` (CPU), else ``dtype`` itself."""
    packs = device.type == "cpu" and getattr(torch, dtype) in PACKABLE and torch.backends.mkldnn.is_available()
    return "float32" if packs or dtype == "int8" else dtype


def prepare(model: nn.Module, dtype: torch.dtype | None = None, lean: bool = True, native: bool = True) -> nn.Module:
    """Make ``model`` fast for batched decoding in ``dtype`` (default: its own) on its device, in place.
    ``lean=False`` keeps transformers' own forward pass on CPU too (the baseline ``LeanStep`` is measured against);
    ``native=False`` keeps the small decoding steps of bfloat16 and int8 in PyTorch too (``serving.engine.native``'s
    baseline)."""
    dtype = dtype or model.dtype
    register_attention()
    model.set_attn_implementation(ATTENTION)
    if dtype == INT8:
        if model.device.type != "cpu":
            raise ValueError("int8 weights are a CPU choice (fbgemm kernels); on a GPU serve bfloat16")
        model.float()  # int8 products take float32 in and give float32 out
        if lean:
            _lean_step(model, Int8Linear)
        quantize_linears(model)
        if lean and native:
            _native_step(model, INT8, Weights.int8)
    elif can_pack(model, dtype):
        if lean:
            plain = {}  # the native step's bfloat16 copies of the stacked weights, made before packing

            def keeping(linear: nn.Linear) -> nn.Module:
                packed = PackedLinear(linear, dtype)
                if native and dtype == torch.bfloat16:
                    plain[packed] = Weights.bfloat16(linear.weight, linear.bias)
                return packed

            _lean_step(model, keeping)
            if native and dtype == torch.bfloat16:
                _native_step(model, dtype, plain.__getitem__, Weights.bfloat16(model.lm_head.weight, None))
        pack_linears(model, dtype)
    elif model.dtype != dtype:
        model.to(dtype)
    if model.device.type == "cuda":
        fuse_elementwise(model)
    return model


def _lean_step(model: nn.Module, fast) -> None:
    """On CPU, where the model is of the Llama family: its forward pass as ``serving.engine.lean.LeanStep``
    (``model.serving_step``), the decoder's linear layers stacked and made fast by ``fast``."""
    from serving.engine.lean import LeanStep, supports

    if supports(model) is None:
        model.serving_step = LeanStep(model, fast)


def _native_step(model: nn.Module, dtype: torch.dtype, weights, lm_head: Weights | None = None) -> None:
    """Small decoding steps of ``model``'s ``LeanStep`` in ``serving.engine.native``, where that can run here;
    ``weights`` gives the native weights of each of the step's linear layers, and of the output layer where
    ``lm_head`` is not given. Where it cannot run, ``describe`` says why."""
    from serving.engine.lean import LeanStep
    from serving.engine.native import NativeStep, NativeUnavailable, supports

    step = getattr(model, "serving_step", None)
    if not isinstance(step, LeanStep):
        return
    why = supports(model, step)
    try:
        if why is None:
            layers = [[weights(x.qkv), weights(x.o), weights(x.gate_up), weights(x.down)] for x in step.layers]
            model.serving_step = NativeStep(model, step, layers, lm_head or weights(model.lm_head), dtype)
    except NativeUnavailable as exc:
        why = str(exc)
    if why is not None:
        model.serving_fused = [f"no native decoding step: {why}"]


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama-family RMS norm, as one function for the compiler to fuse."""
    dtype = hidden.dtype
    hidden = hidden.to(torch.float32)
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden.to(dtype)


def _rotary(q, k, cos, sin, unsqueeze_dim=1):
    """transformers' ``apply_rotary_pos_emb`` (half-rotation), as one function for the compiler to fuse."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    half = q.shape[-1] // 2
    q_rot = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
    k_rot = torch.cat((-k[..., half:], k[..., :half]), dim=-1)
    return q * cos + q_rot * sin, k * cos + k_rot * sin


def fuse_elementwise(model: nn.Module) -> list[str]:
    """On CUDA: the RMS norms and the rotary embedding of Llama-family models as compiled, fused kernels. Returns
    what was fused (nothing for other families, or where this torch cannot compile for the device)."""
    import sys
    import types

    fused = []
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")]
    modeling = sys.modules[type(model).__module__]
    try:
        rms_norm = torch.compile(_rms_norm, dynamic=True)
        rotary = torch.compile(_rotary, dynamic=True)
        probe = torch.ones((2, 1, 8), device=model.device, dtype=model.dtype)
        rms_norm(probe, probe[0, 0], 1e-6)  # compiles now, not during a graph capture
        rotary(probe[:, None], probe[:, None], probe, probe)
    except Exception as exc:  # no working compiler for this device: keep the unfused kernels
        return [f"elementwise fusion unavailable ({type(exc).__name__})"]
    for norm in norms:
        norm.forward = types.MethodType(lambda self, x: rms_norm(x, self.weight, self.variance_epsilon), norm)
    if norms:
        fused.append(f"{len(norms)} RMS norms fused")
    if getattr(modeling, "apply_rotary_pos_emb", None) is not None and hasattr(modeling, "rotate_half"):
        modeling.apply_rotary_pos_emb = rotary
        fused.append("rotary embedding fused")
    model.serving_fused = fused
    return fused


def parameters(model: nn.Module) -> int:
    """The model's parameter count, packed linear layers included."""
    packed = [m for m in model.modules() if isinstance(m, PackedLinear | Int8Linear)]
    return sum(p.numel() for p in model.parameters()) + sum(
        m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in packed
    )


def describe(model: nn.Module) -> list[str]:
    """What ``prepare`` did to ``model``, for /model/info."""
    done = []
    if model.config._attn_implementation == ATTENTION:
        done.append("batched decode attention")
    if isinstance(step := getattr(model, "serving_step", None), nn.Module):
        done.append(step.describe())
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    if packed:
        dtypes = sorted({str(m.dtype).removeprefix("torch.") for m in packed})
        done.append(f"{len(packed)} linear layers packed for oneDNN in {', '.join(dtypes)}")
        if any(m.emulated for m in packed):
            native = type(getattr(model, "serving_step", None)).__name__ == "NativeStep"  # reads bfloat16 weights
            gain = "prefills and larger batches at float32's speed" if native else "no speed gain"
            done.append(f"bfloat16 emulated in float32 products: this CPU has no bfloat16 instructions ({gain})")
        if model.dtype not in {m.dtype for m in packed}:
            done.append(f"activations, attention and KV cache in {str(model.dtype).removeprefix('torch.')}")
    if quantized := [m for m in model.modules() if isinstance(m, Int8Linear)]:
        done.append(f"{len(quantized)} linear layers in int8 (weights per channel, activations per row)")
    return done + getattr(model, "serving_fused", [])


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when this machine has it, else the CPU. ``cuda`` without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use --device cpu or auto"
        )
    return torch.device(name)
