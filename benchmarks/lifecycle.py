"""How long `python main.py mode=all` takes on a warm cache, and where the time goes.

    python benchmarks/lifecycle.py [--eval default] [--model-cache mlflow_data/models]

1. Warm-up: the offline model is converted into the cache if it is not there yet (not timed).
2. End to end: `python main.py mode=all` in a fresh data_dir, timed as a user runs it (interpreter start and imports
   included).
3. Split: the same lifecycle in-process, with timers around the model's generation calls (ChainRuntime.answer and
   answer_batch, which every stage's generation goes through, the pyfunc's included) and model loading. The rest is
   MLflow, the registries, packaging and the scorers.
4. Again in the same data_dir: now mode=promote has a champion (the first run's version) to answer and score
   against the new challenger, so the run grows by the promote stage's own answering and scoring.

The baseline is generation itself (model compute): the report prints every other share as a ratio to it.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(totals: dict, key: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started

    return wrapper


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lifecycle.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def end_to_end(overrides: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "main.py", *overrides], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"main.py mode=all failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def instrument() -> tuple[dict, float]:
    """The heavy imports, timed; then timers around generation and model loading. Returns (totals, import time)."""
    totals: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    import langchain_huggingface  # noqa: F401 - the heavy imports the stages make, timed on their own
    import mlflow  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from lifecycle.integrations import chains, models

    imported = time.perf_counter() - started
    chains.ChainRuntime.answer = timed(totals, "generation", chains.ChainRuntime.answer)
    chains.ChainRuntime.answer_batch = timed(totals, "generation", chains.ChainRuntime.answer_batch)
    models.load_model = timed(totals, "model load", models.load_model)
    return totals, imported


def split(totals: dict, overrides: list[str]) -> tuple[float, dict, list]:
    """One in-process mode=all: its time, its generation and model-load time, its stages' results."""
    from lifecycle import runner

    totals.clear()
    started = time.perf_counter()
    report = runner.run(compose(overrides))
    if report.failed:
        sys.exit(f"in-process mode=all failed: {report.error}")
    return time.perf_counter() - started, dict(totals), report.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", default="default", help="eval config group option (default: default)")
    parser.add_argument("--model-cache", default=str(ROOT / "mlflow_data" / "models"))
    args = parser.parse_args()

    from lifecycle.integrations.models import resolve_model_folder

    common = [f"eval={args.eval}", f"paths.model_cache={args.model_cache}", "experiment.progress_bar=false"]
    resolve_model_folder(compose(["data_dir=unused", *common]).model, args.model_cache)  # warm-up, untimed

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as a, tempfile.TemporaryDirectory(prefix="bench-split-") as b:
        wall = end_to_end(["mode=all", f"data_dir={a}", *common])
        totals, imported = instrument()
        total, first, results = split(totals, ["mode=all", f"data_dir={b}", *common])
        total += imported
        again_total, again, again_results = split(totals, ["mode=all", f"data_dir={b}", *common])

    generation = first["generation"]
    other = total - generation - first["model load"] - imported
    rows = [
        ("generation (model compute, baseline)", generation),
        ("model load (experiment, smoke, test)", first["model load"]),
        ("imports (mlflow, torch, transformers, langchain)", imported),
        ("everything else (MLflow, registry, packaging, scoring)", other),
    ]
    print(f"\n`python main.py mode=all eval={args.eval}` on a warm cache: {wall:.1f} s wall (subprocess)\n")
    print(f"in-process split of the same lifecycle, {total:.1f} s:")
    print(f"  {'part':<58}{'seconds':>9}{'share':>8}{'x generation':>14}")
    for name, seconds in rows:
        print(f"  {name:<58}{seconds:>9.1f}{seconds / total:>8.0%}{seconds / generation:>14.2f}")
    print("\nper stage: " + ", ".join(f"{r.stage} {r.duration_s:.1f} s" for r in results))
    print(f"ratio wall / generation: {wall / generation:.2f}")

    promote = {r.stage: r for r in again_results}["promote"]
    answering = again["generation"] - generation  # beyond the first run's generation: promote's two answer sets
    grown = again_total - (total - imported)
    print(f"\nagain in the same data_dir, with a champion to beat: {again_total:.1f} s ({grown:+.1f} s)")
    print("per stage: " + ", ".join(f"{r.stage} {r.duration_s:.1f} s" for r in again_results))
    print(
        f"promote {promote.duration_s:.1f} s: answering with both versions {answering:.1f} s, loading both and "
        f"scoring both answer sets {promote.duration_s - answering:.1f} s"
    )


if __name__ == "__main__":
    main()
