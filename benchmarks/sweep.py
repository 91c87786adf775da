"""A prompt-template sweep against the same experiments run one by one.

    python benchmarks/sweep.py [--eval default] [--prompts concise,detailed,step_by_step] [--model-cache DIR]

Measured in one run, each part in a fresh data_dir, on a warm model cache:
1. The sweep: `python main.py -m mode=experiment prompt=a,b,c` (Hydra's basic launcher, one process), timed end to
   end. Each job's wall time comes from its run's `job_s` metric; the first job's includes the imports and the
   model load.
2. The baseline: the same experiments as separate `python main.py mode=experiment prompt=x` runs, each timed end to
   end.
3. What a sweep saves per job after the first. Import time is timed in a fresh interpreter (mlflow, torch,
   transformers, langchain), and model-load time is each separate run's `model_load_s`.
Targets: every job after the first costs at most 60% of the first; the sweep beats the separate runs by at least
the import and model-load time of all runs but one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMPORTS = "import mlflow, torch, transformers, langchain_core, langchain_huggingface"


def main_py(args: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"`main.py {' '.join(args)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def runs(data_dir: str, filter_string: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("langchain-e2e-experiment")
    return client.search_runs([experiment.experiment_id], filter_string, order_by=["start_time ASC"])


def import_time() -> float:
    code = f"import time; t = time.perf_counter(); {IMPORTS}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", default="default")
    parser.add_argument("--prompts", default="concise,detailed,step_by_step")
    parser.add_argument("--model-cache", default=str(ROOT / "mlflow_data" / "models"))
    args = parser.parse_args()
    prompts = args.prompts.split(",")
    common = [f"eval={args.eval}", f"paths.model_cache={args.model_cache}", "experiment.progress_bar=false"]

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as warm:
        main_py(["mode=experiment", "eval=quick", f"data_dir={warm}", *common[1:]])  # model converted, untimed

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as sweep_dir:
        sweep_s = main_py(["-m", "mode=experiment", f"prompt={args.prompts}", f"data_dir={sweep_dir}", *common])
        jobs = runs(sweep_dir, "tags.`lifecycle.sweep_job` != ''")
        job_s = {int(r.data.tags["lifecycle.sweep_job"]): r.data.metrics["job_s"] for r in jobs}
        labels = {int(r.data.tags["lifecycle.sweep_job"]): r.data.params["prompt"] for r in jobs}
    separate, loads = [], []
    for prompt in prompts:
        with tempfile.TemporaryDirectory(prefix="bench-separate-") as one:
            separate.append(main_py(["mode=experiment", f"prompt={prompt}", f"data_dir={one}", *common]))
            (run,) = runs(one, "tags.`lifecycle.stage` = 'experiment'")
            loads.append(run.data.metrics["model_load_s"])
    imports = import_time()

    first = job_s[0]
    print(f"\nsweep of {len(prompts)} templates, eval={args.eval}, Hydra's basic launcher (one process)\n")
    print(f"{'job':>3}  {'template':<18} {'wall s':>7} {'x first':>8}")
    for job in sorted(job_s):
        print(f"{job:>3}  {labels[job]:<18} {job_s[job]:>7.1f} {job_s[job] / first:>8.2f}")
    worst = max((job_s[j] / first for j in job_s if j), default=0.0)
    print(f"target: every job after the first <= 0.60 of it: worst {worst:.2f}, {'met' if worst <= 0.6 else 'NOT met'}")

    saved = sum(separate) - sweep_s
    owed = (len(prompts) - 1) * (imports + sum(loads) / len(loads))
    print(f"\nseparate runs: {' + '.join(f'{s:.1f}' for s in separate)} = {sum(separate):.1f} s (baseline)")
    print(f"the sweep: {sweep_s:.1f} s ({sweep_s / sum(separate):.2f} of the baseline)")
    print(f"imports {imports:.1f} s, model load {sum(loads) / len(loads):.1f} s per run")
    print(
        f"target: the sweep saves >= {len(prompts) - 1} x (imports + model load) = {owed:.1f} s: "
        f"saved {saved:.1f} s, {'met' if saved >= owed else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
