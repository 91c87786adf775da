"""This server's decoding engine on a GPU against transformers' own ``generate()``, in one short run.

    python benchmarks/serving_gpu.py [--device cuda] [--dtype bfloat16] [--batches 1 16 64 256]
                                     [--prompt-tokens 32] [--new-tokens 64] [--budget-s 420]

Self-contained: random weights of the served model's architecture (SmolLM2-135M: Llama, 30 layers, 576 wide,
9 query and 3 key/value heads), no MLflow, no FastAPI, no model files: a GPU machine runs it from a copy of this
tree. Every row decodes exactly ``--new-tokens`` tokens (no end token), greedy, from a prompt of ``--prompt-tokens``
random tokens, so every contender does the same work. Measured, at each batch size:

- this engine (``serving.engine.decoding.DecodeBatch``, CUDA graphs per batch-shape bucket), prefill included;
- ``generate(cache_implementation="static")`` (transformers compiles its decoding step): the target, batches 1, 16
  and 64 at least as fast;
- plain ``generate()``.

The first run of each is a warm-up (graph capture, compilation) and is reported apart. A contender that fails is
reported with its error and the rest go on; contenders are skipped, saying so, once ``--budget-s`` is spent.
``--device cpu`` runs the same code on a CPU (small batches): how this script is checked where there is no GPU.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving.engine import Sequence, kernels
from serving.engine.decoding import DecodeBatch

SMOLLM2_135M = {  # the architecture of the served model (its config.json), weights left random
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def ours(model, prompts: torch.Tensor, new_tokens: int, device: torch.device) -> tuple[float, float, dict]:
    """(warm-up s, timed s, details) for this engine decoding every prompt to ``new_tokens``."""
    batch = DecodeBatch(model, pad_token_id=SMOLLM2_135M["pad_token_id"], eos_token_ids=set())
    batch.reserve(prompts.shape[0], prompts.shape[1] + new_tokens + 1)
    ids = prompts.tolist()

    def run() -> None:
        sequences = [Sequence(prompt_ids=p, max_new_tokens=new_tokens) for p in ids]
        batch.run(sequences)
        assert all(len(s.tokens) == new_tokens for s in sequences)

    warm = timed(run, device)
    seconds = timed(run, device)
    graphs = batch.graphs.captured if batch.graphs is not None and batch.graphs.capture else []
    details = {"cuda_graphs": graphs}
    if graphs:  # how much of a step is the replayed graph itself (GPU), the rest being the host's work
        graph, _ = batch.graphs.graphs[graphs[-1]]
        replay = timed(lambda: [graph.replay() for _ in range(new_tokens)], device)
        details["graph_share"] = (
            f"graph replay {replay / new_tokens * 1e3:.2f} of {seconds / new_tokens * 1e3:.2f} ms a step"
        )
    return warm, seconds, details


def generate(
    model, prompts: torch.Tensor, new_tokens: int, device: torch.device, **kwargs
) -> tuple[float, float, dict]:
    def run() -> None:
        out = model.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=SMOLLM2_135M["pad_token_id"],
            **kwargs,
        )
        assert out.shape[1] == prompts.shape[1] + new_tokens

    warm = timed(run, device)
    return warm, timed(run, device), {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=420, help="skip what would start after this many seconds")
    parser.add_argument("--layers", type=int, help="fewer layers than the real model (a quick check on a CPU)")
    parser.add_argument("--only-engine", action="store_true", help="measure this engine alone (no generate())")
    args = parser.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, LlamaConfig

    started = time.perf_counter()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(**{**SMOLLM2_135M, **({"num_hidden_layers": args.layers} if args.layers else {})})
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    plain.generation_config.eos_token_id = None  # every row decodes all its tokens
    served = copy.deepcopy(plain)  # prepared after the baselines ran: its fused rotary is process-wide
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}; torch {torch.__version__}, transformers {transformers.__version__}; {args.dtype}; "
        f"{config.num_hidden_layers} layers; prompt {args.prompt_tokens} + {args.new_tokens} new tokens",
        flush=True,
    )

    contenders = {
        "this engine (CUDA graphs)" if device.type == "cuda" else "this engine": lambda p: ours(
            served, p, args.new_tokens, device
        ),
        'generate(cache_implementation="static")': lambda p: generate(
            plain, p, args.new_tokens, device, cache_implementation="static"
        ),
        "generate()": lambda p: generate(plain, p, args.new_tokens, device),
    }
    labels = list(contenders)
    order = [(labels[1], b) for b in args.batches if b <= 64] + [(labels[2], b) for b in args.batches]
    order += [(labels[1], b) for b in args.batches if b > 64]  # the baselines first, then this engine
    order = [] if args.only_engine else order
    order += [(labels[0], b) for b in args.batches]
    table: dict[tuple[str, int], str] = {}
    for label, batch in order:
        if label == labels[0] and not getattr(served, "serving_prepared", False):
            kernels.prepare(served, dtype)
            served.serving_prepared = True
            print(f"prepared: {', '.join(kernels.describe(served))}", flush=True)
        if time.perf_counter() - started > args.budget_s and label != labels[0]:
            table[label, batch] = "skipped (time budget)"
            continue
        prompts = torch.randint(3, SMOLLM2_135M["vocab_size"], (batch, args.prompt_tokens), device=device)
        try:
            with torch.inference_mode():
                warm, seconds, details = contenders[label](prompts)
        except Exception as exc:  # report and go on: one short call must say as much as it can
            table[label, batch] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            traceback.print_exc()
        else:
            rate = batch * args.new_tokens / seconds
            table[label, batch] = f"{rate:10.0f} tokens/s   (warm-up run {warm:.1f} s)"
            if details.get("cuda_graphs"):
                table[label, batch] += f"  graphs {details['cuda_graphs']}; {details['graph_share']}"
        print(f"{label:<42} batch {batch:>4}: {table[label, batch]}", flush=True)
    print("\nsummary (tokens/s, the timed run after a warm-up run)")
    for batch in args.batches:
        for label in contenders:
            print(f"  batch {batch:>4} | {label:<42} | {table.get((label, batch), '')}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
