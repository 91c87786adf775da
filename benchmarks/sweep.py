"""A prompt-template sweep against the same experiments run one by one; with --ray, on a Ray cluster against
Hydra's basic launcher.

    python benchmarks/sweep.py [--eval default] [--prompts concise,detailed,step_by_step] [--model-cache DIR]
    python benchmarks/sweep.py --ray [--templates 6] [--ray-cpus 2]

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

With --ray, both sweeps of the same templates (the three in conf/prompt/ and copies of them under other names, up to
--templates) record through one tracking server (`mlflow server` on SQLite: the jobs reach it over HTTP):
1. the baseline: Hydra's basic launcher, every job in one process;
2. `hydra/launcher=ray` on a local cluster (`ray start --head --num-cpus N`, started and stopped here, its start
   timed apart), jobs as Ray tasks in N worker processes that each load the model once.
It prints wall time, per-job time (`job_s`) and what Ray adds per job. No target: the issue expected no win on two
cores.
"""

from __future__ import annotations

import argparse
import os
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


def templates(folder: Path, count: int) -> list[str]:
    """``count`` template names: conf/prompt/'s own, then copies of them under other names (in ``folder``, for
    hydra.searchpath)."""
    import yaml

    own = sorted(path.stem for path in (ROOT / "conf" / "prompt").glob("*.yaml"))
    names = own[:count]
    (folder / "prompt").mkdir(parents=True, exist_ok=True)
    for index in range(count - len(names)):
        source = yaml.safe_load((ROOT / "conf" / "prompt" / f"{own[index % len(own)]}.yaml").read_text())
        name = f"copy{index}_{own[index % len(own)]}"
        source["name"] = f"qa-{name.replace('_', '-')}"
        (folder / "prompt" / f"{name}.yaml").write_text(yaml.safe_dump(source))
        names.append(name)
    return names


def job_times(tracking_uri: str, sweep_id: str) -> dict[int, float]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("langchain-e2e-experiment")
    found = client.search_runs([experiment.experiment_id], f"tags.`lifecycle.sweep_id` = '{sweep_id}'")
    return {
        int(r.data.tags["lifecycle.sweep_job"]): r.data.metrics["job_s"] for r in found if "job_s" in r.data.metrics
    }


def sweep_id(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("sweep "))


def compare_ray(args: argparse.Namespace) -> None:
    from benchmarks.servers import start, stop
    from devservices.ports import free_port

    ray = str(Path(sys.executable).with_name("ray"))
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        folder = Path(scratch)
        names = templates(folder / "conf", args.templates)
        port = free_port()
        tracking = f"http://127.0.0.1:{port}"
        command = [sys.executable, "main.py", "mode=server-config", "serve.run=true", f"data_dir={folder / 'server'}"]
        server, _ = start([*command, f"serve.tracking_port={port}"], dict(os.environ), f"{tracking}/health")
        ray_port = free_port()
        try:
            started = time.perf_counter()
            subprocess.run(
                [ray, "start", "--head", f"--port={ray_port}", f"--num-cpus={args.ray_cpus}",
                 "--include-dashboard=false", "--disable-usage-stats"],
                cwd=folder, check=True, capture_output=True,
            )  # fmt: skip
            ray_start = time.perf_counter() - started
            common = [
                "mode=experiment", f"eval={args.eval}", f"prompt={','.join(names)}", f"tracking_uri={tracking}",
                f"paths.model_cache={args.model_cache}", f"hydra.searchpath=[file://{folder / 'conf'}]",
            ]  # fmt: skip
            rows = []
            on_ray = ["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{ray_port}"]
            for label, extra in (("basic launcher (baseline)", []), (f"ray, {args.ray_cpus} workers", on_ray)):
                started = time.perf_counter()
                data_dir = folder / ("ray" if extra else "basic")
                proc = subprocess.run(
                    [sys.executable, "main.py", "-m", *extra, *common, f"data_dir={data_dir}"],
                    cwd=ROOT, capture_output=True, text=True,
                )  # fmt: skip
                wall = time.perf_counter() - started
                if proc.returncode != 0:
                    sys.exit(f"{label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                rows.append((label, wall, job_times(tracking, sweep_id(proc.stdout))))
        finally:
            subprocess.run([ray, "stop", "--force"], capture_output=True)
            stop(server)

    print(f"\n{len(names)}-template sweep, eval={args.eval}, through one tracking server (mlflow server, SQLite)")
    print(f"{'launcher':<26} {'wall s':>7} {'jobs':>5} {'job s mean':>11} {'job s max':>10} {'x baseline':>11}")
    base = rows[0][1]
    for label, wall, jobs in rows:
        mean = sum(jobs.values()) / len(jobs)
        print(f"{label:<26} {wall:>7.1f} {len(jobs):>5} {mean:>11.1f} {max(jobs.values()):>10.1f} {wall / base:>11.2f}")
    per_job = [sum(jobs.values()) / len(jobs) for _, _, jobs in rows]
    print(f"ray start --head: {ray_start:.1f} s (not in the wall times)")
    print(
        f"per job: {per_job[1] - per_job[0]:+.1f} s on Ray ({args.ray_cpus} at once on this machine's "
        f"{os.cpu_count()} cores); the sweep: {rows[1][1] - base:+.1f} s wall, "
        f"{(rows[1][1] - base) / len(names):+.1f} s per job"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", default="default")
    parser.add_argument("--prompts", default="concise,detailed,step_by_step")
    parser.add_argument("--model-cache", default=str(ROOT / "mlflow_data" / "models"))
    parser.add_argument("--ray", action="store_true", help="a sweep on a local Ray cluster against the basic launcher")
    parser.add_argument("--templates", type=int, default=6, help="--ray: how many templates the sweeps compare")
    parser.add_argument("--ray-cpus", type=int, default=2, help="--ray: the cluster's CPUs (one job per CPU at once)")
    args = parser.parse_args()
    if args.ray:
        compare_ray(args)
        return
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
