"""This server's engine against OpenVINO GenAI's, engine to engine: no HTTP, the same prompts handed to each
engine's own Python API, in one run on one machine.

    python benchmarks/engines.py [--model-folder mlflow_data/models/smollm2] [--sequences 1 16 64]
                                 [--new-tokens 64] [--dtypes float32 bfloat16]
                                 [--openvino-python BIN --openvino-model DIR]

The prompts are the model's evaluation questions in its chat template, as many as the row asks for (repeated),
greedy, every sequence generating exactly ``--new-tokens`` tokens (no end token), its prefill included. Each
engine runs each row twice and the second run is timed. Measured, in each dtype:

- this engine (``serving.engine.decoding.DecodeBatch`` over the model as the server prepares it: the lean forward
  pass of ``serving.engine.lean``, packed linear layers);
- the same engine with transformers' own forward pass (``kernels.prepare(lean=False)``): what the lean pass gains;
- OpenVINO GenAI's ``LLMPipeline`` with its continuous-batching scheduler and prefix caching, 2 threads, inference
  precision f32 or bf16, on the model exported with fp16 weights (``scripts/openvino.sh``, its own venv: its
  converter requires an older transformers), run in that venv's Python. Without it the rows say so.

The last lines compare this engine with OpenVINO GenAI, the target of issue 23 (at least its tokens/s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT / "conf" / "eval" / "default.yaml"  # the evaluation questions: the prompts of every row

OPENVINO = """
import json, sys, time
import openvino_genai as ov
model, precision, new_tokens, counts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
prompts = json.loads(sys.stdin.read())
scheduler = ov.SchedulerConfig()
scheduler.cache_size, scheduler.enable_prefix_caching, scheduler.max_num_seqs = 2, True, max(counts)
pipe = ov.LLMPipeline(model, "CPU", scheduler_config=scheduler, INFERENCE_PRECISION_HINT=precision,
                      INFERENCE_NUM_THREADS=2)
config = ov.GenerationConfig()
config.max_new_tokens = config.min_new_tokens = new_tokens
config.do_sample = False
config.apply_chat_template = False  # the prompts come rendered already, as this engine gets them
for n in counts:
    batch = [prompts[i % len(prompts)] for i in range(n)]
    pipe.generate(batch, config)
    started = time.perf_counter()
    pipe.generate(batch, config)
    print(json.dumps({"sequences": n, "tokens_per_s": n * new_tokens / (time.perf_counter() - started)}), flush=True)
"""


def ours(folder: Path, dtype: str, prompts: list[list[int]], counts: list[int], new_tokens: int, lean: bool) -> dict:
    import torch

    from core.model_folder import load_model
    from serving.engine import Sequence, kernels
    from serving.engine.decoding import DecodeBatch

    loaded = load_model(folder, "chat_template", kernels.load_dtype(torch.device("cpu"), dtype))
    kernels.prepare(loaded.model, getattr(torch, dtype), lean=lean)
    batch = DecodeBatch(loaded.model, loaded.tokenizer.pad_token_id, eos_token_ids=set())
    rates = {}
    for n in counts:
        batch.reserve(n, max(map(len, prompts)) + new_tokens + 1)
        rows = [prompts[i % len(prompts)] for i in range(n)]
        for _ in ("warm-up", "timed"):
            sequences = [Sequence(prompt_ids=ids, max_new_tokens=new_tokens) for ids in rows]
            started = time.perf_counter()
            batch.run(sequences)
            elapsed = time.perf_counter() - started
            assert all(len(s.tokens) == new_tokens for s in sequences)
        rates[n] = n * new_tokens / elapsed
        print(f"  {'this engine' if lean else 'transformers forward'} {dtype} {n:>3}: {rates[n]:.1f}", flush=True)
    return rates


def openvino(python: str, model: str, dtype: str, texts: list[str], counts: list[int], new_tokens: int) -> dict:
    precision = {"float32": "f32", "bfloat16": "bf16"}[dtype]
    result = subprocess.run(
        [python, "-c", OPENVINO, model, precision, str(new_tokens), json.dumps(counts)],
        input=json.dumps(texts), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output")
    rates = {row["sequences"]: row["tokens_per_s"] for row in map(json.loads, result.stdout.split("\n")[:-1])}
    for n, rate in rates.items():
        print(f"  OpenVINO GenAI {dtype} {n:>3}: {rate:.1f}", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-folder", type=Path, default=ROOT / "mlflow_data" / "models" / "smollm2")
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--openvino-python", help="the Python of scripts/openvino.sh's venv")
    parser.add_argument("--openvino-model", help="the model exported by scripts/openvino.sh")
    args = parser.parse_args()
    if not (args.model_folder / "config.json").exists():
        sys.exit(f"no model folder at {args.model_folder}: run `make run` (it converts the model) or --model-folder")

    import torch
    import yaml
    from transformers import AutoTokenizer

    from serving.engine.kernels import native_bfloat16

    tokenizer = AutoTokenizer.from_pretrained(args.model_folder)
    questions = [item["question"] for item in yaml.safe_load(EVAL.read_text())["questions"]]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    torch.set_num_threads(2)
    print(
        f"{args.model_folder.name}: {len(questions)} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} "
        f"tokens), {args.new_tokens} new tokens each, greedy; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; bfloat16 instructions: {'yes' if native_bfloat16() else 'no (emulated)'}",
        flush=True,
    )
    table: dict[tuple[str, str], dict] = {}
    for dtype in args.dtypes:
        table["this engine", dtype] = ours(args.model_folder, dtype, prompts, args.sequences, args.new_tokens, True)
        table["transformers forward", dtype] = ours(
            args.model_folder, dtype, prompts, args.sequences, args.new_tokens, False
        )
        if args.openvino_python and args.openvino_model:
            try:
                table["OpenVINO GenAI", dtype] = openvino(
                    args.openvino_python, args.openvino_model, dtype, texts, args.sequences, args.new_tokens
                )
            except Exception as exc:  # report and go on
                table["OpenVINO GenAI", dtype] = {"failed": f"{type(exc).__name__}: {exc}"}
    print("\nsequences | engine                              | tokens/s")
    for n in args.sequences:
        for (name, dtype), rates in table.items():
            shown = f"{rates[n]:8.1f}" if n in rates else rates.get("failed", "not run (scripts/openvino.sh)")
            print(f"{n:>9} | {name + ', ' + dtype:<35} | {shown}")
    for dtype in args.dtypes:
        for n in args.sequences:
            mine, theirs = table["this engine", dtype].get(n), table.get(("OpenVINO GenAI", dtype), {}).get(n)
            if mine and theirs:
                verdict = "met" if mine >= theirs else "NOT met"
                print(
                    f"target: {n} sequences {dtype}, this engine vs OpenVINO GenAI: {mine / theirs:.2f}x (>= 1.0x): "
                    f"{verdict}"
                )
            else:
                print(f"target: {n} sequences {dtype}, this engine vs OpenVINO GenAI: not measured (no OpenVINO)")
            lean, module = mine, table["transformers forward", dtype].get(n)
            print(f"lean forward pass vs transformers' forward, {n} sequences {dtype}: {lean / module:.2f}x")


if __name__ == "__main__":
    main()
