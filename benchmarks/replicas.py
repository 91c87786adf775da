"""Replicas on Ray Serve against the single process, for the same model, same load, in one run on one machine.

    python benchmarks/replicas.py [--model-folder mlflow_data/models/smollm2] [--clients 1 16] [--requests-per-client 4]
                                  [--max-new-tokens 64] [--cpus 2] [--probes 200]

The baseline is `python -m serving` on the model folder (its torch threads on every core). Then, on a local Ray
cluster with `--cpus` CPUs (devservices.cluster), `python -m serving --backend ray` deploys the same server as one
replica holding every CPU, then as two replicas sharing them. Each row is loaded like benchmarks/serving.py: N
concurrent clients sending the evaluation questions through `/v1/chat/completions`, greedy, `--max-new-tokens`, the
answers' tokens counted with the model's tokenizer. The proxy's cost per request is measured apart from generation:
the median time of `--probes` sequential `GET /v1/models` (no model work), through Ray Serve's proxy against the
single process. The last lines print each row's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.servers import start, stop  # noqa: E402 - after the project root is importable
from benchmarks.serving import MODEL_NAME, load  # noqa: E402
from devservices.cluster import local_cluster  # noqa: E402
from devservices.ports import free_port  # noqa: E402


def probe(base: str, count: int) -> float:
    """Median seconds of a request that does no model work."""
    times = []
    with httpx.Client(timeout=60) as http:
        for _ in range(count):
            started = time.perf_counter()
            http.get(f"{base}/v1/models").raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(label: str, base: str, args, questions, count) -> dict:
    row = {"label": label, "probe_ms": probe(base, args.probes) * 1000}
    for clients in args.clients:
        row[clients] = load(base, "chat", questions, clients, args.requests_per_client, args.max_new_tokens, count)
        print(f"  {label}, {clients} clients: {row[clients]['tokens_per_s']:.1f} tokens/s", flush=True)
    return row


def deploy(address: str, port: int, folder: Path, replicas: int, cpus: float, undeploy: bool = False) -> None:
    argv = [sys.executable, "-m", "serving", "--backend", "ray", "--ray-address", address, "--port", str(port)]
    argv += ["--model-uri", str(folder), "--replicas", str(replicas), "--cpus-per-replica", str(cpus)]
    done = subprocess.run(argv + (["--undeploy"] if undeploy else []), capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[1:])} failed:\n{done.stdout}{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-folder", type=Path, default=ROOT / "mlflow_data" / "models" / "smollm2")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2, help="the Ray cluster's CPUs (this machine's cores)")
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    if not (args.model_folder / "config.json").exists():
        sys.exit(f"no model folder at {args.model_folder}: run `make run` (it converts the model) or --model-folder")

    import yaml
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_folder)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    questions = [q["question"] for q in yaml.safe_load((ROOT / "conf/eval/default.yaml").read_text())["questions"]]
    MODEL_NAME[0] = args.model_folder.name
    rows = []

    port = free_port()
    proc, ready_s = start(
        [sys.executable, "-m", "serving", "--model-uri", str(args.model_folder), "--port", str(port)],
        None,
        f"http://127.0.0.1:{port}/health",
    )
    try:
        rows.append(measure("single process (baseline)", f"http://127.0.0.1:{port}", args, questions, count))
    finally:
        stop(proc)

    with tempfile.TemporaryDirectory() as folder, local_cluster(Path(folder), args.cpus) as address:
        port = free_port()
        for replicas in (1, 2):
            started = time.perf_counter()
            deploy(address, port, args.model_folder, replicas, args.cpus / replicas)
            print(f"{replicas} replica(s) deployed in {time.perf_counter() - started:.1f} s", flush=True)
            label = f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''} x {args.cpus / replicas:g} CPU"
            rows.append(measure(label, f"http://127.0.0.1:{port}", args, questions, count))
            deploy(address, port, args.model_folder, replicas, args.cpus / replicas, undeploy=True)
    report(rows, args, ready_s)


def cell(measured: dict, baseline: dict) -> str:
    ratio = measured["tokens_per_s"] / baseline["tokens_per_s"]
    return f"{measured['tokens_per_s']:>9.1f} {measured['p50']:>6.2f} {ratio:>7.2f}"


def report(rows: list[dict], args, ready_s: float) -> None:
    base = rows[0]
    print(f"\nsingle process ready in {ready_s:.1f} s; {args.max_new_tokens} tokens a request at most")
    print(f"{'server':<34} {'proxy ms':>8} " + " ".join(f"{c:>3} cl tok/s  p50 s   x base" for c in args.clients))
    for row in rows:
        cells = [cell(row[c], base[c]) for c in args.clients]
        print(f"{row['label']:<34} {row['probe_ms']:>8.2f}  " + "  ".join(cells))
    for row in rows[1:]:
        print(f"{row['label']}: the proxy adds {row['probe_ms'] - base['probe_ms']:.2f} ms a request")


if __name__ == "__main__":
    main()
