"""This server's engine against OpenVINO GenAI's, engine to engine: no HTTP, the same prompts handed to each
engine's own Python API, in one run on one machine.

    python benchmarks/engines.py [--model-folder mlflow_data/models/smollm2] [--sequences 1 16 64]
                                 [--new-tokens 64] [--dtypes float32 bfloat16] [--prompts distinct|repeated]
                                 [--openvino-python BIN --openvino-model DIR]

The prompts are the model's evaluation questions in its chat template, as many as the row asks for: numbered, so
that no two are alike beyond the chat markup they all share (``--prompts distinct``, the default), or the same
questions over again (``repeated``: OpenVINO's prefix caching then reuses a whole earlier prompt, where this
engine shares the chat markup only). Greedy, every sequence generating exactly ``--new-tokens`` tokens (no end
token), its prefill included. Each engine runs each row twice and the second run is timed. Measured, in each dtype:

- this engine (``serving.engine.decoding.DecodeBatch`` over the model as the server prepares it: the lean forward
  pass of ``serving.engine.lean``, packed linear layers, the KV cache of the chat markup every prompt shares
  computed once, ``serving.engine.engine.share_prefixes``);
- the same engine with transformers' own forward pass (``kernels.prepare(lean=False)``): what the lean pass gains;
- OpenVINO GenAI's ``LLMPipeline`` with its continuous-batching scheduler and prefix caching, 2 threads, inference
  precision f32 or bf16, on the model exported with fp16 weights (``scripts/openvino.sh``, its own venv: its
  converter requires an older transformers), run in that venv's Python. Without it the rows say so.

The last lines compare this engine with OpenVINO GenAI, the target of issue 23 (at least its tokens/s).
"""

from __future__ import annotations

import argparse
import itertools
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
model, precision, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = json.loads(sys.stdin.read())  # per row: the warm-up's prompts, the timed run's
scheduler = ov.SchedulerConfig()
scheduler.cache_size, scheduler.enable_prefix_caching = 2, True
scheduler.max_num_seqs = max(len(timed) for _, timed in runs)
pipe = ov.LLMPipeline(model, "CPU", scheduler_config=scheduler, INFERENCE_PRECISION_HINT=precision,
                      INFERENCE_NUM_THREADS=2)
config = ov.GenerationConfig()
config.max_new_tokens = config.min_new_tokens = new_tokens
config.do_sample = False
config.apply_chat_template = False  # the prompts come rendered already, as this engine gets them
for warm_up, timed in runs:
    pipe.generate(warm_up, config)
    started = time.perf_counter()
    pipe.generate(timed, config)
    rate = len(timed) * new_tokens / (time.perf_counter() - started)
    print(json.dumps({"sequences": len(timed), "tokens_per_s": rate}), flush=True)
"""


def ours(folder: Path, dtype: str, runs: list[list[list[int]]], new_tokens: int, lean: bool) -> dict:
    """Tokens/s of each row: ``runs`` holds, per row, the token ids of the warm-up's prompts and the timed run's."""
    import torch

    from core.model_folder import load_model
    from serving.engine import Sequence, kernels
    from serving.engine.decoding import DecodeBatch
    from serving.engine.engine import share_prefixes
    from serving.engine.prompting import Prompter

    loaded = load_model(folder, "chat_template", kernels.load_dtype(torch.device("cpu"), dtype))
    kernels.prepare(loaded.model, getattr(torch, dtype), lean=lean)
    batch = DecodeBatch(loaded.model, loaded.tokenizer.pad_token_id, eos_token_ids=set())
    longest = max(len(ids) for run in runs for prompts in run for ids in prompts)
    share_prefixes(batch, Prompter(loaded, None, "{{question}}", longest))  # as the server does
    rates = {}
    for run in runs:
        n = len(run[-1])
        batch.reserve(n, longest + new_tokens + 1)
        for prompts in run:  # the warm-up, then the timed run
            sequences = [Sequence(prompt_ids=ids, max_new_tokens=new_tokens) for ids in prompts]
            started = time.perf_counter()
            batch.run(sequences)
            elapsed = time.perf_counter() - started
            assert all(len(s.tokens) == new_tokens for s in sequences)
        rates[n] = n * new_tokens / elapsed
        print(f"  {'this engine' if lean else 'transformers forward'} {dtype} {n:>3}: {rates[n]:.1f}", flush=True)
    return rates


def openvino(python: str, model: str, dtype: str, runs: list[list[list[str]]], new_tokens: int) -> dict:
    precision = {"float32": "f32", "bfloat16": "bf16"}[dtype]
    result = subprocess.run(
        [python, "-c", OPENVINO, model, precision, str(new_tokens)],
        input=json.dumps(runs), capture_output=True, text=True, timeout=1800,
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
    parser.add_argument(
        "--prompts", choices=["distinct", "repeated"], default="distinct",
        help="distinct: every sequence its own prompt (the questions numbered); repeated: the questions over again",
    )  # fmt: skip
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
    numbers = itertools.count(1)

    def prompt_texts(n: int) -> list[str]:
        """n prompts in the chat template; distinct: numbered across the whole benchmark, so that no run (warm-up
        or timed, of any row) sees a prompt an earlier one saw, and no engine's cache of earlier prompts helps."""
        asked = [questions[i % len(questions)] for i in range(n)]
        if args.prompts == "distinct":
            asked = [f"Question {next(numbers)}: {q}" for q in asked]
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in asked
        ]

    texts = [[prompt_texts(n), prompt_texts(n)] for n in args.sequences]  # per row: warm-up, timed
    encode = tokenizer.encode  # the rendered template holds its special tokens already
    runs = [[[encode(t, add_special_tokens=False) for t in prompts] for prompts in run] for run in texts]
    lengths = [len(ids) for run in runs for prompts in run for ids in prompts]
    torch.set_num_threads(2)
    print(
        f"{args.model_folder.name}: {len(questions)} questions, {args.prompts} prompts ({min(lengths)}-{max(lengths)} "
        f"tokens), {args.new_tokens} new tokens each, greedy; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; bfloat16 instructions: {'yes' if native_bfloat16() else 'no (emulated)'}",
        flush=True,
    )
    table: dict[tuple[str, str], dict] = {}
    for dtype in args.dtypes:
        table["this engine", dtype] = ours(args.model_folder, dtype, runs, args.new_tokens, True)
        table["transformers forward", dtype] = ours(args.model_folder, dtype, runs, args.new_tokens, False)
        if args.openvino_python and args.openvino_model:
            try:
                table["OpenVINO GenAI", dtype] = openvino(
                    args.openvino_python, args.openvino_model, dtype, texts, args.new_tokens
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
