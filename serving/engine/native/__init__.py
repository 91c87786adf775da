"""The decoding step of the Llama family in bfloat16 or int8 as one native loop (``step.c``), for the CPU's small
batches.

A batch-1 step of the lean forward pass (``serving.engine.lean``) dispatches about 1,500 PyTorch operations; on a
2-core CPU their dispatch, the Python between them and the threads that every product starts and stops are as much
of the step as reading the weights. ``step.c`` runs the whole step, every layer and the output layer, in one OpenMP
parallel region whose threads meet five times a layer, reading the weights in their order in memory. Its products
run on one of four kernels (``KERNELS``, chosen by ``best_kernel``):

- bfloat16 weights (half the bytes of float32): AVX2 widens 8 weights at a time to float32 for its multiply-adds
  (any x86-64 CPU with AVX2 and FMA); AVX512-BF16 multiplies 32 pairs of bfloat16 values an instruction, as
  oneDNN's bfloat16 products do.
- int8 weights (a quarter of the bytes), as ``core.quantization.Int8Linear`` has them: each input row quantized by
  its own largest value as fbgemm does it, then exact integer sums (AVX2's vpmaddubsw, or AVX512-VNNI's vpdpbusd),
  turned into floats as fbgemm turns them. A product gives ``Int8Linear``'s values to the bit.

bfloat16 gives the engine's bfloat16 values (``kernels.PackedLinear``): each product's input and output rounded to
bfloat16, float32 everywhere else; only the order of the sums inside a product differs. In both dtypes the float32
parts (norms, attention, SiLU) may differ from PyTorch's in their last bits, so answers are bfloat16's or int8's,
judged as those are (the agreement with float32, the promote gate), not PyTorch's trajectory to the bit (an int8
answer can part from the PyTorch step's after a few tokens: a last-bit difference can move an input across a
quantization step). float32 keeps the PyTorch step, whose answers equal ``generate()``'s.

``NativeStep`` wraps the model's ``LeanStep``: decoding steps of up to ``max_rows`` rows (``MAX_ROWS``) run here,
prefills and larger batches in PyTorch (oneDNN's or fbgemm's products). Each output of a product is one thread's sum
in a fixed order, whatever the batch: a row's values do not depend on the rows beside it. The library is compiled on
first use with the system's C compiler into a cache folder (``SERVING_NATIVE_CACHE``, default
``~/.cache/llm-lifecycle/native``), once per source and flags (an exported bundle ships it built);
``SERVING_NATIVE=0`` turns it off. Where it cannot be built or run (no compiler, no AVX2, not x86-64), the PyTorch
step serves and /model/info says why.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

SOURCE = Path(__file__).with_name("step.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
# The products' kernels (step.c's KERNELS, in order): bfloat16 on AVX2 or AVX512-BF16, int8 on AVX2 or AVX512-VNNI.
KERNELS = ("avx2", "avx512-bf16", "int8", "int8-vnni")
# Decoding steps of up to this many rows run natively, by kernel. AVX2 machines have no bfloat16 products in
# oneDNN either (emulated in float32): the native step was faster at every size up to 32 rows and even at 64 (AMD
# EPYC Zen 3, 2026-12-07). On AVX512-BF16 machines, against oneDNN's bfloat16 products, the native step was
# 3.0-3.6x the PyTorch step at 1 row, 1.5-1.7x at 8, even at 16 and 0.8-0.9x at 32 (its loads bind). int8 against
# fbgemm: 3.4-3.7x at 1 row, 1.6-2.0x at 8, 1.2x at 16, 0.8-1.0x at 32 (AMD EPYC Zen 4, 2026-12-08).
MAX_ROWS = {"avx2": 32, "avx512-bf16": 16, "int8": 16, "int8-vnni": 16}
MAX_POSITIONS = 32768  # the rotary table's length (16 MB at a head of 64); later positions decode in PyTorch


class NativeUnavailable(RuntimeError):
    """Why the native step cannot run here (the PyTorch step serves instead)."""


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cache_folder() -> Path:
    given = os.environ.get("SERVING_NATIVE_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "llm-lifecycle" / "native"


def key() -> str:
    """What names a build: the source and the flags."""
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]


def build(folder: Path) -> Path:
    """Compile ``step.c`` into ``folder`` (once: an existing build of the same source and flags is kept); returns
    the library's path. Raises ``NativeUnavailable`` where this machine cannot."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise NativeUnavailable(f"the native step is written for x86-64 (AVX2), not {platform.machine()}")
    target = folder / f"step-{key()}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler or not shutil.which(compiler):
        raise NativeUnavailable(f"no C compiler ({compiler or 'cc'}) to build it; install gcc, or set CC")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            built = Path(scratch) / target.name
            command = [compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise NativeUnavailable(f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()[-500:]}")
            os.replace(built, target)  # atomic: processes building at once each install a whole file
    except OSError as exc:
        raise NativeUnavailable(f"could not build it in {folder}: {exc}") from exc
    return target


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled step: the build shipped beside ``step.c`` (an exported bundle's), else the cache folder's,
    built on first use. Raises ``NativeUnavailable``."""
    if os.environ.get("SERVING_NATIVE", "1") == "0":
        raise NativeUnavailable("turned off (SERVING_NATIVE=0)")
    missing = {"avx2", "fma"} - _cpu_flags()
    if missing:
        raise NativeUnavailable(f"this CPU lacks {', '.join(sorted(missing))}")
    shipped = SOURCE.with_name(f"step-{key()}.so")
    target = shipped if shipped.exists() else build(cache_folder())
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:  # a shipped build this system cannot load
        raise NativeUnavailable(f"could not load {target.name}: {exc}") from exc
    lib.native_step.restype = ctypes.c_int
    lib.native_step.argtypes = [
        ctypes.POINTER(_Model),
        ctypes.POINTER(_Cache),
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    lib.native_scratch_floats.restype = ctypes.c_size_t
    lib.native_scratch_floats.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return lib


_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)


class _Matrix(ctypes.Structure):
    _fields_ = [("weight", _P), ("scale", _P), ("zero", _P), ("bias", _P)]


class _Model(ctypes.Structure):
    _fields_ = [
        *[(n, ctypes.c_int) for n in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab")],
        ("kernel", ctypes.c_int),
        ("eps", ctypes.c_float),
        ("scaling", ctypes.c_float),
        ("embed", _P),
        *[(n, ctypes.POINTER(_Matrix)) for n in ("qkv", "o", "gate_up", "down", "lm_head")],
        ("norm_in", _PP),
        ("norm_post", _PP),
        ("norm_final", _P),
        ("cos", _P),
        ("sin", _P),
    ]


class _Cache(ctypes.Structure):
    _fields_ = [
        ("keys", _PP),
        ("values", _PP),
        ("mask", _P),
        ("columns", ctypes.c_int),
        ("write", ctypes.c_int),
        ("start", ctypes.c_int),
        ("end", ctypes.c_int),
    ]


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _pointers(tensors: list[torch.Tensor | None]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[_address(t) for t in tensors])


INPUT_SCALE = torch.tensor(2 / 127, dtype=torch.float32)  # step.c's: fbgemm's int8 input scale over [-1, 1]
ZERO_POINT = 64  # and its zero point (7 bits: reduce_range)


@dataclasses.dataclass
class Weights:
    """One product's weights as ``step.c`` reads them (its ``Matrix``): bfloat16, or int8 with, per output, the
    scale and zero-point term that turn its integer sums into ``core.quantization.Int8Linear``'s floats."""

    weight: torch.Tensor  # [out, in] bfloat16 or int8
    bias: torch.Tensor | None = None  # float32
    scale: torch.Tensor | None = None  # float32, int8 only
    zero: torch.Tensor | None = None  # int32, int8 only

    @classmethod
    def bfloat16(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> Weights:
        """``kernels.PackedLinear``'s values: the weight and the bias rounded to bfloat16."""
        rounded = None if bias is None else bias.detach().bfloat16().float()
        return cls(weight.detach().to(torch.bfloat16), rounded)

    @classmethod
    def int8(cls, linear: nn.Module) -> Weights:
        """An ``Int8Linear``'s weights, unpacked from fbgemm: int8 values per output channel and their scales."""
        packed, _ = torch.ops.quantized.linear_unpack(linear.packed)
        weight = packed.int_repr()[:, : linear.in_features].contiguous()
        scale = INPUT_SCALE * packed.q_per_channel_scales().float()  # fbgemm's product of the two, in float32
        zero = ZERO_POINT * weight.sum(dim=1, dtype=torch.int32)
        return cls(weight, linear.bias, scale, zero)

    def interleaved(self, half: int) -> Weights:
        """Rows [0, half) and [half, 2 half) in turn (gate and up: each thread's share holds both halves of its
        SiLU)."""

        def turn(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.view(2, half, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

        return Weights(turn(self.weight), turn(self.bias), turn(self.scale), turn(self.zero))

    def matrix(self) -> _Matrix:
        return _Matrix(_address(self.weight), _address(self.scale), _address(self.zero), _address(self.bias))

    def contiguous(self) -> Weights:
        """The same tensors, each contiguous (no copy of those that are: not ``dataclasses.astuple``, which
        deep-copies every tensor)."""
        parts = (getattr(self, f.name) for f in dataclasses.fields(self))
        return Weights(*(None if t is None else t.contiguous() for t in parts))


def supports(model: nn.Module, lean: nn.Module) -> str | None:
    """Why the native step cannot take this model (None: it can); the library's own conditions aside."""
    hidden, inter, dim = model.config.hidden_size, model.config.intermediate_size, lean.head_dim
    if hidden % 8 or inter % 8 or (lean.heads * dim) % 8 or dim % 8 or dim > 512:
        return "its sizes are not multiples of 8 (or a head is wider than 512)"
    if model.model.embed_tokens.weight.dtype != torch.float32:
        return "its embeddings are not float32"
    return None


def best_kernel(dtype: torch.dtype, *widths: int) -> str:
    """The fastest kernel this CPU runs for products of these input widths in ``dtype`` (bfloat16: AVX512-BF16
    where the CPU has it and every width is a multiple of 32, its vectors' length, else AVX2). Raises
    ``NativeUnavailable`` where no kernel takes them."""
    if dtype == torch.int8:
        if any(width % 32 for width in widths):
            raise NativeUnavailable("int8 products need input widths that are multiples of 32")
        vnni = {"avx512f", "avx512bw", "avx512_vnni"} <= _cpu_flags() and all(width % 64 == 0 for width in widths)
        return "int8-vnni" if vnni else "int8"
    fast = {"avx512f", "avx512_bf16"} <= _cpu_flags() and all(width % 32 == 0 for width in widths)
    return "avx512-bf16" if fast else "avx2"


class NativeStep(nn.Module):
    """``lean``'s forward pass, with decoding steps of up to ``max_rows`` rows run by ``step.c``. ``layers`` holds
    each layer's weights (q/k/v stacked, o, gate/up stacked, down), ``lm_head`` the output layer's; all bfloat16 or
    all int8 (``dtype``)."""

    def __init__(
        self,
        model: nn.Module,
        lean: nn.Module,
        layers: list[list[Weights]],
        lm_head: Weights,
        dtype: torch.dtype = torch.bfloat16,
        max_rows: int | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.lib = library()
        self.lean = lean
        config = model.config
        inter = config.intermediate_size
        self.kernel = best_kernel(dtype, config.hidden_size, inter, lean.heads * lean.head_dim)
        self.max_rows = max_rows or MAX_ROWS[self.kernel]
        self.threads = threads
        self._weights = [
            [qkv.contiguous(), o.contiguous(), gate_up.interleaved(inter).contiguous(), down.contiguous()]
            for qkv, o, gate_up, down in layers
        ]
        self._lm_head = lm_head.contiguous()
        self._embed = model.model.embed_tokens.weight.detach()
        self._norms_in = [layer.norm_in.weight.detach().float().contiguous() for layer in lean.layers]
        self._norms_post = [layer.norm_post.weight.detach().float().contiguous() for layer in lean.layers]
        self._norm_final = model.model.norm.weight.detach().float().contiguous()
        positions = torch.arange(min(config.max_position_embeddings, MAX_POSITIONS))[None]
        cos, sin = lean.rotation(positions, torch.float32)  # the same table the PyTorch step computes per step
        self._cos, self._sin = cos[0, :, 0].contiguous(), sin[0, :, 0].contiguous()
        self._matrices = {
            name: (_Matrix * len(self._weights))(*[w[i].matrix() for w in self._weights])
            for i, name in enumerate(("qkv", "o", "gate_up", "down"))
        }
        self._matrices["lm_head"] = (_Matrix * 1)(self._lm_head.matrix())
        self._norm_arrays = [_pointers(self._norms_in), _pointers(self._norms_post)]
        self._model = _Model(
            layers=len(self._weights),
            hidden=config.hidden_size,
            heads=lean.heads,
            kv_heads=lean.kv_heads,
            head_dim=lean.head_dim,
            intermediate=inter,
            vocab=self._lm_head.weight.shape[0],
            kernel=KERNELS.index(self.kernel),
            eps=lean.layers[0].norm_in.variance_epsilon,
            scaling=lean.layers[0].scaling,
            embed=self._embed.data_ptr(),
            **{k: ctypes.cast(v, ctypes.POINTER(_Matrix)) for k, v in self._matrices.items()},
            norm_in=ctypes.cast(self._norm_arrays[0], _PP),
            norm_post=ctypes.cast(self._norm_arrays[1], _PP),
            norm_final=self._norm_final.data_ptr(),
            cos=self._cos.data_ptr(),
            sin=self._sin.data_ptr(),
        )
        self._scratch = torch.empty(0)
        self.steps = 0  # decoding steps run natively (the rest ran in PyTorch)

    def describe(self) -> str:
        return (
            f"{self.lean.describe()}; decoding steps of up to {self.max_rows} rows in one native loop "
            f"(step.c, {self.kernel} products)"
        )

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        rows, new = ids.shape
        window = cache.window
        decoding = new == 1 and rows <= self.max_rows and window.first_row == 0 and isinstance(window.write, int)
        if not decoding or int(positions.max()) >= self._cos.shape[0]:
            return self.lean(ids, positions, mask, cache)
        threads = self.threads or torch.get_num_threads()
        columns = cache.capacity[1]
        need = self.lib.native_scratch_floats(ctypes.byref(self._model), rows, columns, threads)
        if self._scratch.numel() < need:
            self._scratch = torch.empty(need, dtype=torch.float32)
        keys, values = _pointers(cache.keys), _pointers(cache.values)  # the buffers move when the cache grows
        state = _Cache(
            keys=ctypes.cast(keys, _PP),
            values=ctypes.cast(values, _PP),
            mask=cache.mask.data_ptr(),
            columns=columns,
            write=window.write,
            start=window.start,
            end=window.end,
        )
        ids = ids.reshape(rows).to(torch.long).contiguous()
        positions = positions.reshape(rows).to(torch.long).contiguous()
        logits = torch.empty((rows, self._model.vocab), dtype=torch.float32)
        self.lib.native_step(
            ctypes.byref(self._model),
            ctypes.byref(state),
            rows,
            ids.data_ptr(),
            positions.data_ptr(),
            self._scratch.data_ptr(),
            threads,
            logits.data_ptr(),
        )
        self.steps += 1
        return logits
