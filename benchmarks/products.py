"""The matrix products of one bfloat16 decoding step at batch 1, alone: what the engine runs against a candidate
kernel, and both against what the memory allows, in one run on one machine.

    python benchmarks/products.py [--model-folder mlflow_data/models/smollm2] [--repeats 20] [--threads N]

Issue 23 asks where a batch-1 step's time goes. This measures the products of the lean step
(``serving.engine.lean``: query/key/value and gate/up stacked, 4 a layer, then the output layer over the
vocabulary), with weights of the model's shapes (random values: speed does not depend on them), each product once in
turn as a step runs them, so that every weight comes from memory and not from cache:

- ``oneDNN packed``: ``torch.ops.mkldnn._linear_pointwise`` on weights packed ahead of time, what the engine runs;
- ``F.linear``: the same products unpacked, what a plain PyTorch model runs;
- ``gemv_bf16``: ``benchmarks/kernels/gemv_bf16.c``, a matrix-vector kernel written for this (AVX512-BF16: one
  VDPBF16PS per 32 weights, rows streamed once, OpenMP over rows), built here with gcc: what a plain kernel bound by
  memory alone gives the same products. A probe, not the engine's.

Each is timed as the best of ``--repeats`` passes over all the products (milliseconds and GB/s of weights read),
beside the read bandwidth of this machine's cores (a sum over 1 GiB of float32, best of 5, as benchmarks/serving.py
measures the memory ceiling). Then each product is timed alone in its turn and the times are summed by kind: how the
rate depends on a product's size. The kernel's results are checked against float32 products of the same bfloat16
values. docs/serving.md keeps the figures and what they say.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serving import read_bandwidth  # noqa: E402 - after the project root is importable

KERNEL = ROOT / "benchmarks" / "kernels" / "gemv_bf16.c"
FLAGS = ["-O3", "-mavx512f", "-mavx512bf16", "-fopenmp", "-shared", "-fPIC"]


@dataclass(frozen=True)
class Shape:
    name: str
    out: int
    inp: int


def step_shapes(config: dict) -> list[Shape]:
    """The products of one step of the lean forward pass, in the order it runs them."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or hidden // heads
    layer = [
        Shape("qkv", (heads + 2 * kv) * head_dim, hidden),
        Shape("o", hidden, heads * head_dim),
        Shape("gate_up", 2 * inter, hidden),
        Shape("down", hidden, inter),
    ]
    return layer * config["num_hidden_layers"] + [Shape("lm_head", config["vocab_size"], hidden)]


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def build_kernel(folder: Path) -> ctypes.CDLL:
    """gcc builds the kernel into ``folder``; why not, when this machine cannot run it."""
    if "avx512_bf16" not in cpu_flags():
        raise SystemExit("products.py: this CPU has no AVX512-BF16 (avx512_bf16 in /proc/cpuinfo); the kernel needs it")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit(
            "products.py: gcc is not on PATH; install it (Debian: apt-get install gcc) to build the kernel"
        )
    library = folder / "libgemv_bf16.so"
    subprocess.run([gcc, *FLAGS, str(KERNEL), "-o", str(library)], check=True)
    kernel = ctypes.CDLL(str(library))
    kernel.gemv_bf16.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 3
    return kernel


def best_ms(run, repeats: int) -> float:
    run()  # warm-up: packing caches, OpenMP threads started
    return min(timeit.repeat(run, number=1, repeat=repeats)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-folder", type=Path, default=ROOT / "mlflow_data" / "models" / "smollm2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    config_file = args.model_folder / "config.json"
    if not config_file.exists():
        raise SystemExit(f"products.py: no {config_file}; run `make run` first (it converts the model there)")
    torch.set_num_threads(args.threads)
    shapes = step_shapes(json.loads(config_file.read_text()))
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(s.out, s.inp, generator=generator).to(torch.bfloat16) for s in shapes]
    inputs = {k: torch.randn(1, k, generator=generator).to(torch.bfloat16) for k in {s.inp for s in shapes}}
    outputs = [torch.empty(s.out) for s in shapes]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    size = sum(w.numel() * w.element_size() for w in weights)

    with tempfile.TemporaryDirectory() as folder:
        kernel = build_kernel(Path(folder))

        def engine_one(i: int) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(inputs[shapes[i].inp], packed[i], None, "none", [], "")

        def unpacked_one(i: int) -> None:
            F.linear(inputs[shapes[i].inp], weights[i])

        def kernel_one(i: int) -> None:
            w, y = weights[i], outputs[i]
            kernel.gemv_bf16(w.data_ptr(), inputs[w.shape[1]].data_ptr(), y.data_ptr(), *w.shape, args.threads)

        def step(one):
            """All the products in turn, as a step runs them."""
            return lambda: [one(i) for i in range(len(shapes))]

        def each_product(one) -> list[float]:
            """Seconds of each product in its turn (weights from memory), the best of the passes for each."""
            best = [float("inf")] * len(shapes)
            for _ in range(args.repeats + 1):
                for i in range(len(shapes)):
                    started = time.perf_counter()
                    one(i)
                    best[i] = min(best[i], time.perf_counter() - started)
            return best

        step(kernel_one)()
        errors = {"gemv_bf16": 0.0, "oneDNN packed": 0.0}
        for i, (w, y) in enumerate(zip(weights, outputs, strict=True)):
            exact = inputs[w.shape[1]].float() @ w.float().T
            scale = exact.abs().max().item()
            got = engine_one(i).float()
            errors["gemv_bf16"] = max(errors["gemv_bf16"], (y - exact[0]).abs().max().item() / scale)
            errors["oneDNN packed"] = max(errors["oneDNN packed"], (got - exact).abs().max().item() / scale)
        bandwidth = read_bandwidth()
        rows = [
            (name, best_ms(run, args.repeats))
            for name, run in (
                ("oneDNN packed (the engine)", step(engine_one)),
                ("F.linear", step(unpacked_one)),
                ("gemv_bf16 (probe)", step(kernel_one)),
            )
        ]
        timed = {"oneDNN": each_product(engine_one), "kernel": each_product(kernel_one)}
        kinds = []
        for name in dict.fromkeys(s.name for s in shapes):
            chosen = [i for i, s in enumerate(shapes) if s.name == name]
            kind_size = sum(weights[i].numel() * weights[i].element_size() for i in chosen)
            kinds.append((name, len(chosen), kind_size, *(sum(t[i] for i in chosen) * 1e3 for t in timed.values())))

    print(
        f"{len(shapes)} products of one bfloat16 step at batch 1, {size / 1e6:.0f} MB of weights, {args.threads} "
        f"threads, {torch.backends.cpu.get_cpu_capability()}; read bandwidth (sum over 1 GiB): {bandwidth:.1f} GB/s"
    )
    print(f"{'products':28s} {'ms':>7s} {'GB/s':>6s} {'of read bw':>10s} {'x engine':>8s} {'max rel. error':>14s}")
    engine = rows[0][1]
    for name, ms in rows:
        error = next((f"{v:.1e}" for k, v in errors.items() if name.startswith(k)), "")
        rate = size / ms / 1e6
        print(f"{name:28s} {ms:7.2f} {rate:6.1f} {rate / bandwidth:10.0%} {engine / ms:8.2f} {error:>14s}")

    print("\nby kind, each product timed alone in its turn (best of the passes): microseconds a product, GB/s")
    print(f"{'kind':10s} {'count':>5s} {'MB each':>8s} {'oneDNN us':>9s} {'GB/s':>6s} {'kernel us':>9s} {'GB/s':>6s}")
    for name, count, kind_size, engine_ms, kernel_ms in kinds:
        each = kind_size / count
        print(
            f"{name:10s} {count:5d} {each / 1e6:8.2f} {engine_ms / count * 1e3:9.1f} {kind_size / engine_ms / 1e6:6.1f}"
            f" {kernel_ms / count * 1e3:9.1f} {kind_size / kernel_ms / 1e6:6.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
