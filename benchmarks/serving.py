"""Throughput and latency of this server against `mlflow models serve`, for the same registered model.

    python benchmarks/serving.py [--data-dir mlflow_data] [--clients 1 4 16] [--requests-per-client 4]
                                 [--max-new-tokens 64]

Needs a registered model (`python main.py mode=deploy`). Each server is started, timed to ready, loaded with N
concurrent clients (each sending the same fixed questions with greedy decoding and a fixed max_new_tokens through
the same /invocations protocol), and stopped before the other starts, so they never share the two cores. Generated
tokens are counted with the model's tokenizer. Baseline: `mlflow models serve --env-manager local` (1 worker).
Defaults: the model's own max_new_tokens (64), and 4 requests per client so that the 16-client figure measures a
steady state more than the ramp-up and the tail. The last lines compare the 16-client figures with the targets
(at least 6x the baseline's tokens/s, p50 latency no worse than the baseline's).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lifecycle.ports import free_port  # noqa: E402 - after the project root is importable

QUESTIONS = [
    "What is the capital of France?",
    "What is machine learning?",
    "How many days are there in a week?",
    "What is photosynthesis?",
]
MODEL_URI = "models:/langchain-e2e-model@champion"


def start(command: list[str], env: dict, ready_url: str) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while time.perf_counter() - started < 300:
        if proc.poll() is not None:
            sys.exit(f"{command[:3]} exited {proc.returncode}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval for start-to-ready
    sys.exit(f"{command[:3]} not ready after 300 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def load(base: str, clients: int, per_client: int, max_new_tokens: int, count_tokens) -> dict:
    def client(index: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=600) as http:
            for i in range(per_client):
                question = QUESTIONS[(index + i) % len(QUESTIONS)]
                payload = {
                    "dataframe_split": {"columns": ["question"], "data": [[question]]},
                    "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0},
                }
                started = time.perf_counter()
                response = http.post(f"{base}/invocations", json=payload)
                response.raise_for_status()
                out.append((time.perf_counter() - started, count_tokens(response.json()["predictions"][0])))
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT / "mlflow_data"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tracking = f"sqlite:///{Path(args.data_dir).resolve()}/mlflow.db"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MLFLOW_REGISTRY_URI", None)

    sys.path.insert(0, str(ROOT))
    from serving.loader import resolved

    os.environ["MLFLOW_TRACKING_URI"] = tracking
    from transformers import AutoTokenizer

    with resolved(MODEL_URI) as spec:
        tokenizer = AutoTokenizer.from_pretrained(spec.folder)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    servers = {
        "this server (python -m serving)": (
            lambda port: [sys.executable, "-m", "serving", "--model-uri", MODEL_URI, "--port", str(port)],
            "/health",
        ),
        "mlflow models serve (baseline)": (
            lambda port: [
                "mlflow",
                "models",
                "serve",
                "-m",
                MODEL_URI,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            "/ping",
        ),
    }
    results: dict[str, dict] = {}
    for name, (command, ready_path) in servers.items():
        port = free_port()
        proc, ready_s = start(command(port), env, f"http://127.0.0.1:{port}{ready_path}")
        try:
            base = f"http://127.0.0.1:{port}"
            load(base, 1, 1, 4, count_tokens)  # warm-up, untimed
            results[name] = {"ready_s": ready_s} | {
                c: load(base, c, args.requests_per_client, args.max_new_tokens, count_tokens) for c in args.clients
            }
        finally:
            stop(proc)

    ours, base = results.values()
    print(
        f"\nserving {MODEL_URI}: greedy, max_new_tokens={args.max_new_tokens}, "
        f"{args.requests_per_client} requests per client, /invocations on both\n"
    )
    print(f"{'clients':>7} | {'server':<34} | {'tokens/s':>8} | {'p50 s':>6} | {'p95 s':>6}")
    for c in args.clients:
        for name, r in results.items():
            print(f"{c:>7} | {name:<34} | {r[c]['tokens_per_s']:>8.1f} | {r[c]['p50']:>6.2f} | {r[c]['p95']:>6.2f}")
        print(
            f"{'':>7} | {'ratio (this / baseline)':<34} | {ours[c]['tokens_per_s'] / base[c]['tokens_per_s']:>7.1f}x"
            f" | {ours[c]['p50'] / base[c]['p50']:>5.2f}x | {ours[c]['p95'] / base[c]['p95']:>5.2f}x"
        )
    for name, r in results.items():
        print(f"start-to-ready, {name}: {r['ready_s']:.1f} s")
    top = max(args.clients)
    speedup, p50 = ours[top]["tokens_per_s"] / base[top]["tokens_per_s"], ours[top]["p50"] / base[top]["p50"]
    print(f"target at {top} clients: tokens/s >= 6x baseline: {speedup:.1f}x, {'met' if speedup >= 6 else 'NOT met'}")
    print(f"target at {top} clients: p50 <= baseline p50: {p50:.2f}x, {'met' if p50 <= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
