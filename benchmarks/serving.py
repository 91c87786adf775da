"""This server against what a user would run instead, for the same registered model, in one run on one machine.

    python benchmarks/serving.py [--data-dir mlflow_data] [--clients 1 16 64] [--requests-per-client 4]
                                 [--max-new-tokens 64] [--rates 1 2 4] [--open-requests 32] [--only NAME ...]
                                 [--llama-server BIN --gguf-dir DIR]

Needs a registered model (`python main.py mode=deploy`). The servers, started one at a time so that they never share
the cores, each timed from start to ready:

- this server, float32, bfloat16 and int8 (`python -m serving --model-uri models:/...@champion --dtype ...`);
- `transformers serve --continuous-batching` on the same model folder, float32 and bfloat16: the library's own
  continuous batching, the free alternative every user of this project already has installed;
- `mlflow models serve --env-manager local` (1 worker) on the same URI, through /invocations (it has no chat
  endpoint); at 64 clients it is left out: its 60 s request timeout fails most of such a load;
- `llama-server` (llama.cpp) on F32, BF16 and Q8_0 GGUFs of the same weights, where `scripts/llama-server.sh` has
  built it (`--llama-server BIN --gguf-dir DIR`, what the script prints): what a CPU user who wants speed picks;
- this server, float32, with a trace of every answer exported to a lean `mlflow server` on the same database
  (started for that row): what tracing costs against the same server without it;
- this server, bfloat16, without its cache of recent prompts (`SERVING_PROMPT_CACHE_MB=0`): what the cache buys
  when, as here, the clients' questions repeat (llama-server reuses a slot's earlier prompt the same way).

Each is loaded with N concurrent clients sending the evaluation questions through `/v1/chat/completions`, greedy,
`max_tokens` = the model's max_new_tokens (64), 4 requests per client (2 at 64 clients). Generated tokens are
counted with the model's tokenizer for every server alike. Then the open loop `vllm bench serve` reports: requests
arriving at random (Poisson, fixed seed) at each of `--rates` requests per second, streamed (SSE), each server
given the same arrival times and questions; per rate: time to first token (TTFT), time per output token after the
first (TPOT) and the gaps between streamed chunks (ITL), median and p99, and goodput, the requests per second whose
TTFT and TPOT both meet the objective (`--goodput-ttft`, `--goodput-tpot`). Also measured on this server: the first
request after ready, an overload burst (429 with Retry-After expected, never 5xx) and, for bfloat16 and int8, their
agreement with float32 (from /model/info). Before any server starts, the memory ceiling for one user is measured:
the read bandwidth of this machine's cores (a sum over a 1 GiB float32 tensor, best of 5) over the bytes of
weights one decoding step at batch 1 must read (the model folder's safetensors in float32, half of them in
bfloat16). The last lines compare the figures with the targets of issues 11 and 23.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import random
import statistics
import sys
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.servers import start, stop, try_start  # noqa: E402 - after the project root is importable
from devservices.ports import free_port  # noqa: E402
from lifecycle.processes import NotReady  # noqa: E402

MODEL_URI = "models:/langchain-e2e-model@champion"
SEED = 0  # the open loop's arrival times and questions
GOODPUT = {"ttft": 2.0, "tpot": 0.1}  # seconds: the objective a request must meet to count towards goodput (flags)
OVERLOAD_EXTRA = 64  # requests beyond what the batch and the queue hold, sent at once
MODEL_NAME = ["served"]
LLAMA_PRECISIONS = ("F32", "BF16", "Q8_0")  # the model field of chat requests: the served folder, set in main()


@dataclass
class Server:
    name: str
    command: list[str]
    ready_path: str
    protocol: str = "chat"  # chat | invocations
    ours: bool = False
    max_clients: int | None = None  # more clients than this: left out, with the reason
    skip_reason: str = ""
    traced: bool = False  # SERVING_TRACES_URL: every answer exported to the benchmark's tracking server
    open_loop: bool = True  # also loaded at the open loop's request rates (streaming)
    env: dict = field(default_factory=dict)  # set for this server only
    results: dict = field(default_factory=dict)


def request(http: httpx.Client, base: str, protocol: str, question: str, max_tokens: int) -> str:
    if protocol == "chat":
        body = {
            "model": MODEL_NAME[0],  # transformers serve answers 400 unless it names the folder it serves
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        response = http.post(f"{base}/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]
    body = {
        "dataframe_split": {"columns": ["question"], "data": [[question]]},
        "params": {"max_new_tokens": max_tokens, "temperature": 0.0},
    }
    response = http.post(f"{base}/invocations", json=body)
    response.raise_for_status()
    return response.json()["predictions"][0]


def load(base: str, protocol: str, questions, clients: int, per_client: int, max_tokens: int, count) -> dict:
    def client(index: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=600) as http:
            for i in range(per_client):
                question = questions[(index + i) % len(questions)]
                started = time.perf_counter()
                answer = request(http, base, protocol, question, max_tokens)
                out.append((time.perf_counter() - started, count(answer)))
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "tokens_per_answer": statistics.mean(r[1] for r in results),
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def streamed(http: httpx.Client, base: str, question: str, max_tokens: int) -> tuple[float, list[float], str]:
    """One streamed chat answer: (seconds to the first content chunk, the arrival time of every content chunk
    after the request was sent, the text)."""
    body = {
        "model": MODEL_NAME[0],
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started, arrivals, text = time.perf_counter(), [], []
    with http.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if content := (choices[0].get("delta") or {}).get("content"):
                arrivals.append(time.perf_counter() - started)
                text.append(content)
    return (arrivals[0] if arrivals else float("nan")), arrivals, "".join(text)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def open_loop(base: str, questions, rate: float, requests: int, max_tokens: int, count) -> dict:
    """``requests`` streamed requests arriving as a Poisson process of ``rate`` per second (seeded: every server
    gets the same arrival times and questions), each sent at its time whatever the others are doing."""
    rng = random.Random(f"{SEED}-{rate}")
    times, now = [], 0.0
    for _ in range(requests):
        now += rng.expovariate(rate)
        times.append(now)
    picked = [questions[rng.randrange(len(questions))] for _ in range(requests)]

    def one(index: int) -> dict:
        delay = start + times[index] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # waits for this request's arrival time in the schedule, not for readiness
        with httpx.Client(timeout=600) as http:
            sent = time.perf_counter()
            try:
                ttft, arrivals, text = streamed(http, base, picked[index], max_tokens)
            except httpx.HTTPError as exc:
                return {"error": type(exc).__name__}
            latency = time.perf_counter() - sent
        tokens = count(text)
        return {
            "ttft": ttft,
            "tpot": (latency - ttft) / (tokens - 1) if tokens > 1 else float("nan"),
            "itl": [b - a for a, b in itertools.pairwise(arrivals)],
            "tokens": tokens,
        }

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    done = [r for r in results if "error" not in r]
    ttft, tpot = [r["ttft"] for r in done], [r["tpot"] for r in done if r["tpot"] == r["tpot"]]
    itl = [gap for r in done for gap in r["itl"]]
    good = [r for r in done if r["ttft"] <= GOODPUT["ttft"] and r["tpot"] <= GOODPUT["tpot"]]
    return {
        "rate": rate,
        "completed": len(done),
        "failed": len(results) - len(done),
        "tokens_per_s": sum(r["tokens"] for r in done) / wall,
        "ttft_p50": percentile(ttft, 0.5), "ttft_p99": percentile(ttft, 0.99),
        "tpot_p50": percentile(tpot, 0.5), "tpot_p99": percentile(tpot, 0.99),
        "itl_p50": percentile(itl, 0.5), "itl_p99": percentile(itl, 0.99),
        "goodput": len(good) / wall,
    }  # fmt: skip


def overload(base: str, info: dict, question: str) -> dict:
    """More concurrent requests than the batch and the queue hold: how many were refused, and how."""
    burst = info["batching"]["max_batch_size"] + info["batching"]["max_queue"] + OVERLOAD_EXTRA
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 8, "temperature": 0}

    def one(_):
        with httpx.Client(timeout=600) as http:
            response = http.post(f"{base}/v1/chat/completions", json=body)
            return response.status_code, response.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(one, range(burst)))
    return {
        "sent": burst,
        "ok": sum(code == 200 for code, _ in answers),
        "429": sum(code == 429 for code, _ in answers),
        "429_with_retry_after": sum(code == 429 and retry is not None for code, retry in answers),
        "5xx": sum(code >= 500 for code, _ in answers),
    }


def measure_ours(base: str, server: Server, questions, max_tokens: int, count) -> None:
    """What only this server is asked for: the first request after ready, its settings, and (once) overload."""
    with httpx.Client(timeout=600) as http:
        started = time.perf_counter()
        request(http, base, "chat", questions[0], max_tokens)
        first = time.perf_counter() - started
        started = time.perf_counter()
        request(http, base, "chat", questions[0], max_tokens)
        server.results["first_request_s"], server.results["warm_request_s"] = first, time.perf_counter() - started
        server.results["info"] = http.get(f"{base}/model/info").json()


def measured_agreement(base: str, timeout_s: float = 300) -> dict:
    """The bfloat16 server's agreement with float32, which it measures in its idle time after ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        agreement = httpx.get(f"{base}/model/info", timeout=30).json()["dtype_agreement"]
        if "identical" in agreement:
            return agreement
        time.sleep(1)  # polling interval: the server measures only while it has nothing else to do
    return {"status": f"not measured within {timeout_s} s"}


def servers(args, folder: Path) -> list[Server]:
    ours = [sys.executable, "-m", "serving", "--model-uri", MODEL_URI, "--port", "{port}"]
    hf = ["transformers", "serve", "--continuous-batching", "--device", "cpu", "--host", "127.0.0.1"]
    mlflow = ["mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local", "--host", "127.0.0.1"]
    listed = [
        Server("this server, float32", [*ours, "--dtype", "float32"], "/health", ours=True),
        Server(
            "this server, float32, traced",
            [*ours, "--dtype", "float32"],
            "/health",
            ours=True,
            traced=True,
            open_loop=False,
        ),
        Server("transformers serve, float32", [*hf, "--dtype", "float32", "--port", "{port}", str(folder)], "/health"),
        Server("this server, bfloat16", [*ours, "--dtype", "bfloat16"], "/health", ours=True),
        Server(
            "this server, bfloat16, no cache",
            [*ours, "--dtype", "bfloat16"],
            "/health",
            ours=True,
            open_loop=False,
            env={"SERVING_PROMPT_CACHE_MB": "0"},  # the shared chat markup only, as before the cache of prompts
        ),
        Server("this server, int8", [*ours, "--dtype", "int8"], "/health", ours=True),
        Server(
            "transformers serve, bfloat16", [*hf, "--dtype", "bfloat16", "--port", "{port}", str(folder)], "/health"
        ),
        Server(
            "mlflow models serve",
            [*mlflow, "--port", "{port}"],
            "/ping",
            protocol="invocations",
            max_clients=16,
            open_loop=False,  # no streaming endpoint
            skip_reason="left out: its 60 s request timeout fails most requests of this load",
        ),
    ]
    if args.llama_server and args.gguf_dir:
        for precision in LLAMA_PRECISIONS:
            gguf = Path(args.gguf_dir) / f"SmolLM2-135M-Instruct.{precision}.gguf"
            if not (Path(args.llama_server).exists() and gguf.exists()):
                print(f"llama-server {precision} row left out: {args.llama_server} or {gguf} does not exist")
                continue
            slots = max(args.clients)  # one slot per client, 1024 tokens of context each, as the issue measured
            command = [args.llama_server, "-m", str(gguf), "-t", str(os.cpu_count()), "-np", str(slots)]
            command += ["-c", str(slots * 1024), "--host", "127.0.0.1", "--port", "{port}"]
            listed.append(Server(f"llama-server, {precision}", command, "/health"))
    else:
        print("llama-server rows left out: build it with scripts/llama-server.sh and pass the flags it prints")
    return [s for s in listed if not args.only or any(o in s.name for o in args.only)]


def tracking_server(data_dir: Path, env: dict) -> tuple:
    """The lean tracking server (what `mode=server-config` starts) on the benchmark's database: (process, URL)."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{data_dir.resolve()}/mlflow.db",
        "--artifacts-destination", str(data_dir.resolve() / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    proc, _ = start(command, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, f"{url}/health")
    return proc, url


def trace_counts(base: str) -> dict[str, int]:
    lines = httpx.get(f"{base}/metrics", timeout=30).text.splitlines()
    return {
        line.split('"')[1]: int(float(line.split()[-1])) for line in lines if line.startswith("serving_trace_spans")
    }


def run(server: Server, env: dict, args, questions, count) -> None:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in server.command]
    env = {**env, **server.env}
    tracker = None
    if server.traced:
        tracker, url = tracking_server(Path(args.data_dir), env)
        env = {**env, "SERVING_TRACES_URL": url}
    try:
        proc, server.results["ready_s"] = try_start(command, env, f"http://127.0.0.1:{port}{server.ready_path}")
    except NotReady as exc:  # reported in its rows; the other servers still run
        server.skip_reason = f"did not start: {str(exc).splitlines()[0][:120]}"
        print(f"  {server.name}: {server.skip_reason}", flush=True)
        if tracker is not None:
            stop(tracker)
        return
    base = f"http://127.0.0.1:{port}"
    try:
        if server.ours:
            measure_ours(base, server, questions, args.max_new_tokens, count)
        else:
            load(base, server.protocol, questions, 1, 1, 4, count)  # warm-up, untimed
        for clients in args.clients:
            if server.max_clients and clients > server.max_clients:
                continue
            per_client = max(2, min(args.requests_per_client, 128 // clients))
            try:
                server.results[clients] = load(
                    base, server.protocol, questions, clients, per_client, args.max_new_tokens, count
                )
            except httpx.HTTPError as exc:  # a server that fails this load is reported so; the others still run
                server.results[clients] = {"error": f"failed: {type(exc).__name__}: {exc}"[:160]}
            print(f"  {server.name}, {clients} clients: {server.results[clients]}", flush=True)
        if server.open_loop:
            server.results["open"] = [
                open_loop(base, questions, rate, args.open_requests, args.max_new_tokens, count) for rate in args.rates
            ]
            for figures in server.results["open"]:
                print(f"  {server.name}, {figures['rate']} requests/s: {figures}", flush=True)
        if server.ours and "float32" in server.name:
            server.results["overload"] = overload(base, server.results["info"], questions[0])
        if server.ours and server.results["info"].get("dtype_agreement"):
            server.results["info"]["dtype_agreement"] = measured_agreement(base)
        if server.traced:
            server.results["traces"] = trace_counts(base)
    finally:
        stop(proc)
        if tracker is not None:
            stop(tracker)


def read_bandwidth(repeats: int = 5) -> float:
    """The read bandwidth of this process's torch threads, GB/s: the best of ``repeats`` sums over 1 GiB of
    float32."""
    import torch

    data = torch.ones(2**28)  # 1 GiB of float32
    data.sum()  # first touch: the pages exist before the timing
    return data.numel() * data.element_size() / min(timeit.repeat(data.sum, number=1, repeat=repeats)) / 1e9


def memory_ceiling(folder: Path, repeats: int = 5) -> dict:
    """The read bandwidth of this process's torch threads (``read_bandwidth``) and the tokens/s one user could get
    if a decoding step only read the model's weights once, in float32 and bfloat16."""
    import torch

    bandwidth = read_bandwidth(repeats)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))  # float32 on disk
    return {
        "cpu": torch.backends.cpu.get_cpu_capability(),  # AVX2, AVX512, ...: what the kernels can use
        "native_bfloat16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "threads": torch.get_num_threads(),
        "bandwidth_gb_s": bandwidth,
        "weights_mb": weights / 1e6,
        "float32": bandwidth * 1e9 / weights,
        "bfloat16": bandwidth * 1e9 / (weights / 2),
    }


def report(listed: list[Server], args, ceiling: dict) -> None:
    width = max(30, *(len(s.name) for s in listed))
    print(f"\n{MODEL_URI}: /v1/chat/completions (mlflow: /invocations), greedy, max_tokens={args.max_new_tokens}\n")
    print(f"{'clients':>7} | {'server':<{width}} | {'tokens/s':>8} | {'p50 s':>6} | {'p95 s':>6} | {'tok/answer':>10}")
    for clients in args.clients:
        for s in listed:
            r = s.results.get(clients)
            if r is None or "error" in r:
                print(f"{clients:>7} | {s.name:<{width}} | {r['error'] if r else s.skip_reason}")
                continue
            row = f"{r['tokens_per_s']:>8.1f} | {r['p50']:>6.2f} | {r['p95']:>6.2f} | {r['tokens_per_answer']:>10.1f}"
            print(f"{clients:>7} | {s.name:<{width}} | {row}")
    print(
        f"\nopen loop: {args.open_requests} streamed requests per rate, Poisson arrivals (seed {SEED}); goodput: "
        f"requests/s with TTFT <= {GOODPUT['ttft']} s and TPOT <= {GOODPUT['tpot']} s"
    )
    print(
        f"{'req/s':>5} | {'server':<{width}} | {'tokens/s':>8} | {'TTFT p50/p99 s':>14} | {'TPOT p50/p99 ms':>15} | "
        f"{'ITL p50/p99 ms':>14} | {'goodput':>7} | failed"
    )
    for rate in args.rates:
        for s in listed:
            r = next((o for o in s.results.get("open", []) if o["rate"] == rate), None)
            if r is None:
                continue
            ttft = f"{r['ttft_p50']:.2f}/{r['ttft_p99']:.2f}"
            tpot = f"{r['tpot_p50'] * 1e3:.0f}/{r['tpot_p99'] * 1e3:.0f}"
            itl = f"{r['itl_p50'] * 1e3:.0f}/{r['itl_p99'] * 1e3:.0f}"
            print(
                f"{rate:>5} | {s.name:<{width}} | {r['tokens_per_s']:>8.1f} | {ttft:>14} | {tpot:>15} | {itl:>14} | "
                f"{r['goodput']:>7.2f} | {r['failed']}"
            )
    print()
    for s in (s for s in listed if "ready_s" in s.results):
        line = f"start-to-ready, {s.name}: {s.results['ready_s']:.1f} s"
        if s.ours:
            first, warm = s.results["first_request_s"], s.results["warm_request_s"]
            line += f"; first request after ready {first:.2f} s (next: {warm:.2f} s)"
        print(line)
    print(
        f"memory ceiling for one user: {ceiling['bandwidth_gb_s']:.1f} GB/s read ({ceiling['threads']} threads, 1 GiB "
        f"sum) over {ceiling['weights_mb']:.0f} MB of float32 weights a step: {ceiling['float32']:.1f} tokens/s "
        f"float32, {ceiling['bfloat16']:.1f} bfloat16"
    )
    native = "native bfloat16 products" if ceiling["native_bfloat16"] else "no bfloat16 instructions (emulated)"
    print(f"CPU: {ceiling['cpu']} kernels, {native}")
    by_name = {s.name: s for s in listed}
    for s in listed:
        if s.ours and "info" in s.results:
            info = s.results["info"]
            print(
                f"{s.name}: {info['dtype']} on {info['device']}; {', '.join(info['acceleration'])}; "
                f"max batch {info['batching']['max_batch_size']}"
            )
            if info.get("dtype_agreement"):
                print(f"  {info['dtype']} against float32 on the evaluation questions: {info['dtype_agreement']}")
            if "overload" in s.results:
                print(f"  overload burst: {s.results['overload']}")
            if "traces" in s.results:
                print(f"  spans of the answers' traces: {s.results['traces']}")
    verdicts(by_name, args, ceiling)


def _verdict(label: str, value: float, target: float, unit: str = "x", lower_is_better: bool = False) -> None:
    met = value <= target if lower_is_better else value >= target
    sign = "<=" if lower_is_better else ">="
    print(f"target: {label}: {value:.2f}{unit} ({sign} {target}{unit}): {'met' if met else 'NOT met'}")


def verdicts(by_name: dict[str, Server], args, ceiling: dict) -> None:
    def figure(name: str, clients: int):
        server = by_name.get(name)
        figures = server.results.get(clients) if server else None
        return None if figures is None or "error" in figures else figures

    for dtype, target in (("float32", 1.5), ("bfloat16", 1.3)):
        ours, theirs = figure(f"this server, {dtype}", 16), figure(f"transformers serve, {dtype}", 16)
        if ours and theirs:
            _verdict(
                f"16 clients {dtype}, tokens/s vs transformers serve",
                ours["tokens_per_s"] / theirs["tokens_per_s"],
                target,
            )
            _verdict(
                f"16 clients {dtype}, p50 vs transformers serve", ours["p50"] / theirs["p50"], 1.0, lower_is_better=True
            )
        at16, at64 = figure(f"this server, {dtype}", 16), figure(f"this server, {dtype}", 64)
        if at16 and at64:
            _verdict(f"64 clients {dtype}, tokens/s vs 16 clients", at64["tokens_per_s"] / at16["tokens_per_s"], 1.3)
    for clients in args.clients:  # not a target: what the cache of recent prompts buys when questions repeat
        cached, uncached = (
            figure("this server, bfloat16", clients),
            figure("this server, bfloat16, no cache", clients),
        )
        if cached and uncached:
            speed, p50 = cached["tokens_per_s"] / uncached["tokens_per_s"], cached["p50"] / uncached["p50"]
            print(
                f"prompt cache, {clients} clients bfloat16: tokens/s {speed:.2f}x, p50 {p50:.2f}x "
                "of the same server without it"
            )
    plain, traced = figure("this server, float32", 16), figure("this server, float32, traced", 16)
    if plain and traced:
        _verdict("16 clients, tokens/s traced vs untraced", traced["tokens_per_s"] / plain["tokens_per_s"], 0.95)
        _verdict("16 clients, p50 traced vs untraced", traced["p50"] / plain["p50"], 1.05, lower_is_better=True)
    bf16 = by_name.get("this server, bfloat16")
    if bf16 and "identical" in (agreement := bf16.results["info"].get("dtype_agreement") or {}):
        print(
            f"target: bfloat16 answers identical to float32: {agreement['identical']} of {agreement['questions']} "
            f"(>= 6 of 8): {'met' if agreement['identical'] >= 6 else 'NOT met'}"
        )
    f32 = by_name.get("this server, float32")
    if f32 and "overload" in f32.results:
        o = f32.results["overload"]
        met = o["429"] > 0 and o["429"] == o["429_with_retry_after"] and o["5xx"] == 0
        print(
            f"target: overload answers 429 with Retry-After, never 5xx: {o['429']} x 429, {o['5xx']} x 5xx: "
            f"{'met' if met else 'NOT met'}"
        )
    for ours_name, theirs_name in (("float32", "F32"), ("bfloat16", "BF16"), ("int8", "Q8_0")):
        for clients in args.clients:
            ours, theirs = figure(f"this server, {ours_name}", clients), figure(f"llama-server, {theirs_name}", clients)
            if ours and theirs:
                label = f"{clients} clients {ours_name}, tokens/s vs llama-server {theirs_name}"
                _verdict(label, ours["tokens_per_s"] / theirs["tokens_per_s"], 1.0)
                label = f"{clients} clients {ours_name}, p50 vs llama-server {theirs_name}"
                _verdict(label, ours["p50"] / theirs["p50"], 1.0, lower_is_better=True)
    if one := figure("this server, bfloat16", 1):
        share = one["tokens_per_s"] / ceiling["bfloat16"]
        _verdict("1 client bfloat16, tokens/s vs the memory ceiling", share * 100, 75, "%")
    for s in by_name.values():
        if s.ours and "ready_s" in s.results:
            _verdict(f"start-to-ready, {s.name}", s.results["ready_s"], 10.0, " s", lower_is_better=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT / "mlflow_data"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--only", nargs="+", help="run only the servers whose name contains one of these")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="open loop: requests/s")
    parser.add_argument("--open-requests", type=int, default=32, help="open loop: requests per rate")
    parser.add_argument("--goodput-ttft", type=float, default=GOODPUT["ttft"], help="goodput: TTFT objective, s")
    parser.add_argument("--goodput-tpot", type=float, default=GOODPUT["tpot"], help="goodput: TPOT objective, s")
    parser.add_argument("--llama-server", help="llama-server, as scripts/llama-server.sh builds it")
    parser.add_argument("--gguf-dir", help="the F32, BF16 and Q8_0 GGUFs scripts/llama-server.sh makes")
    args = parser.parse_args()
    GOODPUT.update(ttft=args.goodput_ttft, tpot=args.goodput_tpot)

    tracking = f"sqlite:///{Path(args.data_dir).resolve()}/mlflow.db"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    from transformers import AutoTokenizer

    from serving.engine.loader import resolved

    with resolved(MODEL_URI) as spec:
        tokenizer = AutoTokenizer.from_pretrained(spec.folder)
        folder = Path(spec.folder)
        MODEL_NAME[0] = str(folder)
        questions = spec.eval_questions or sys.exit(f"{MODEL_URI} carries no evaluation questions: deploy it again")
        listed = servers(args, folder)
        ceiling = memory_ceiling(folder)  # before any server runs: nothing else reads memory meanwhile
        for server in listed:
            print(f"{server.name}: starting", flush=True)
            run(server, env, args, questions, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
    report(listed, args, ceiling)


if __name__ == "__main__":
    main()
