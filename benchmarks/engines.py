"""This server's engine against OpenVINO GenAI's, engine to engine: no HTTP, the same prompts handed to each
engine's own Python API, in one run on one machine.

    python benchmarks/engines.py [--model-folder mlflow_data/models/smollm2] [--sequences 1 16 64]
                                 [--new-tokens 64] [--dtypes float32 bfloat16] [--prompts distinct|repeated]
                                 [--rounds 3] [--openvino-python BIN --openvino-model DIR]

The prompts are the model's evaluation questions in its chat template, as many as the row asks for: numbered, so
that no two are alike beyond the chat markup they all share (``--prompts distinct``, the default), or the same
questions over again (``repeated``: OpenVINO's prefix caching then reuses a whole earlier prompt, and so does
this engine's cache of recent prompts, ``serving.engine.prompts``, at the server's default size). Greedy, every
sequence generating exactly ``--new-tokens`` tokens (no end token), its prefill included. Every engine of a
dtype is loaded once and kept; each row is a warm-up of each, then ``--rounds`` rounds in which each engine in turn
answers a fresh batch (A B C, A B C, ...), so that a machine whose speed drifts over minutes slows every engine
alike; the row is the median of the rounds, with their spread.
Measured, in each dtype:

- this engine (``serving.engine.decoding.DecodeBatch`` over the model as the server prepares it: the lean forward
  pass of ``serving.engine.lean``, packed linear layers, the KV cache of the chat markup every prompt shares
  computed once, ``serving.engine.engine.share_prefixes``, and the server's cache of recent prompts);
- the same engine with transformers' own forward pass (``kernels.prepare(lean=False)``): what the lean pass gains;
- in bfloat16, the same engine without its native decoding step (``kernels.prepare(native=False)``: every step in
  PyTorch): what ``serving.engine.native`` gains;
- OpenVINO GenAI's ``LLMPipeline`` with its continuous-batching scheduler and prefix caching, 2 threads, inference
  precision f32 or bf16, on the model exported with fp16 weights (``scripts/openvino.sh``, its own venv: its
  converter requires an older transformers), run in that venv's Python, one batch of prompts a line on its
  standard input. Without it the rows say so.

The last lines compare this engine with OpenVINO GenAI, the target of issue 23 (at least its tokens/s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT / "conf" / "eval" / "default.yaml"  # the evaluation questions: the prompts of every row

OPENVINO = """
import json, sys, time
import openvino_genai as ov
model, precision, new_tokens, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
scheduler = ov.SchedulerConfig()
scheduler.cache_size, scheduler.enable_prefix_caching, scheduler.max_num_seqs = 2, True, rows
pipe = ov.LLMPipeline(model, "CPU", scheduler_config=scheduler, INFERENCE_PRECISION_HINT=precision,
                      INFERENCE_NUM_THREADS=2)
config = ov.GenerationConfig()
config.max_new_tokens = config.min_new_tokens = new_tokens
config.do_sample = False
config.apply_chat_template = False  # the prompts come rendered already, as this engine gets them
print("ready", flush=True)
for line in sys.stdin:  # one batch of prompts a line; its tokens/s back
    prompts = json.loads(line)
    started = time.perf_counter()
    pipe.generate(prompts, config)
    print(json.dumps(len(prompts) * new_tokens / (time.perf_counter() - started)), flush=True)
"""


@dataclass
class Batch:
    """One run's prompts: as text (OpenVINO renders nothing itself here) and as token ids (this engine)."""

    texts: list[str]
    ids: list[list[int]]


class Ours:
    """This engine over the model as the server prepares it (``lean=False``: transformers' forward pass instead of
    the lean one), loaded once; ``run`` answers a batch and returns its tokens/s."""

    def __init__(
        self, folder: Path, dtype: str, lean: bool, rows: int, columns: int, new_tokens: int, native: bool = True
    ) -> None:
        import torch

        from core.model_folder import load_model
        from serving.engine import kernels
        from serving.engine.decoding import DecodeBatch
        from serving.engine.engine import share_prefixes
        from serving.engine.prompting import Prompter

        loaded = load_model(folder, "chat_template", kernels.load_dtype(torch.device("cpu"), dtype))
        kernels.prepare(loaded.model, getattr(torch, dtype), lean=lean, native=native)
        from serving.http.settings import Settings

        cache_mb = Settings.model_fields["prompt_cache_mb"].default  # the server's cache of recent prompts
        self.batch = DecodeBatch(
            loaded.model, loaded.tokenizer.pad_token_id, eos_token_ids=set(), prompt_cache_bytes=int(cache_mb * 2**20)
        )
        share_prefixes(self.batch, Prompter(loaded, None, "{{question}}", columns))  # as the server does
        self.batch.reserve(rows, columns + new_tokens + 1)
        self.new_tokens = new_tokens

    def run(self, batch: Batch) -> float:
        from serving.engine import Sequence

        sequences = [Sequence(prompt_ids=ids, max_new_tokens=self.new_tokens) for ids in batch.ids]
        started = time.perf_counter()
        self.batch.run(sequences)
        elapsed = time.perf_counter() - started
        assert all(len(s.tokens) == self.new_tokens for s in sequences)
        return len(sequences) * self.new_tokens / elapsed

    def close(self) -> None:
        del self.batch


class OpenVINO:
    """OpenVINO GenAI's ``LLMPipeline`` in its own venv's Python, loaded once and kept, fed one batch a line."""

    def __init__(self, python: str, model: str, dtype: str, rows: int, new_tokens: int) -> None:
        precision = {"float32": "f32", "bfloat16": "bf16"}[dtype]
        self.process = subprocess.Popen(
            [python, "-c", OPENVINO, model, precision, str(new_tokens), str(rows)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._answer()  # "ready"

    def _answer(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            error = self.process.stderr.read().strip().splitlines()
            raise RuntimeError(error[-1] if error else f"OpenVINO's process exited {self.process.wait()}")
        return line

    def run(self, batch: Batch) -> float:
        self.process.stdin.write(json.dumps(batch.texts) + "\n")
        self.process.stdin.flush()
        return float(self._answer())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


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
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each engine a row, interleaved")
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

    encode = tokenizer.encode  # the rendered template holds its special tokens already

    def fresh(n: int) -> Batch:
        texts = prompt_texts(n)
        return Batch(texts, [encode(t, add_special_tokens=False) for t in texts])

    longest = max(len(ids) for ids in fresh(len(questions)).ids) + 4  # room for the numbers of later prompts
    torch.set_num_threads(2)
    print(
        f"{args.model_folder.name}: {len(questions)} questions, {args.prompts} prompts, {args.new_tokens} new tokens "
        f"each, greedy; torch {torch.__version__}, {torch.get_num_threads()} threads; bfloat16 instructions: "
        f"{'yes' if native_bfloat16() else 'no (emulated)'}; {args.rounds} interleaved rounds a row, median",
        flush=True,
    )
    rows = max(args.sequences)
    table: dict[tuple[str, str], dict] = {}
    spread: dict[tuple[str, str, int], str] = {}  # the rounds' lowest and highest tokens/s
    for dtype in args.dtypes:
        engines = {
            "this engine": Ours(args.model_folder, dtype, True, rows, longest, args.new_tokens),
            "transformers forward": Ours(args.model_folder, dtype, False, rows, longest, args.new_tokens),
        }
        if dtype == "bfloat16":  # the same engine without its native decoding step (serving.engine.native)
            engines["PyTorch step"] = Ours(args.model_folder, dtype, True, rows, longest, args.new_tokens, False)
        if args.openvino_python and args.openvino_model:
            try:
                engines["OpenVINO GenAI"] = OpenVINO(
                    args.openvino_python, args.openvino_model, dtype, rows, args.new_tokens
                )
            except Exception as exc:  # report and go on without it
                table["OpenVINO GenAI", dtype] = {"failed": f"{type(exc).__name__}: {exc}"}
        for n in args.sequences:
            samples: dict[str, list[float]] = {name: [] for name in engines}
            for engine in engines.values():
                engine.run(fresh(n))  # warm-up
            for _ in range(args.rounds):  # A B C, A B C, ...: each engine sees the machine's drift alike
                for name, engine in engines.items():
                    samples[name].append(engine.run(fresh(n)))
            for name, rates in samples.items():
                table.setdefault((name, dtype), {})[n] = statistics.median(rates)
                spread[name, dtype, n] = f"{min(rates):.1f}-{max(rates):.1f}"
                print(f"  {name} {dtype} {n:>3}: {', '.join(f'{r:.1f}' for r in rates)}", flush=True)
        for engine in engines.values():
            engine.close()
    print("\nsequences | engine                              | tokens/s | min-max of the rounds")
    for n in args.sequences:
        for (name, dtype), rates in table.items():
            if n in rates:
                print(f"{n:>9} | {name + ', ' + dtype:<35} | {rates[n]:8.1f} | {spread[name, dtype, n]}")
            else:
                print(f"{n:>9} | {name + ', ' + dtype:<35} | {rates.get('failed', 'not run (scripts/openvino.sh)')}")
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
            if pytorch := table.get(("PyTorch step", dtype), {}).get(n):
                print(f"native decoding step vs the PyTorch step, {n} sequences {dtype}: {mine / pytorch:.2f}x")


if __name__ == "__main__":
    main()
