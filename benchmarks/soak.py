"""Hours of load in minutes: mixed traffic against `python -m serving`, then whether it stayed healthy.

    python benchmarks/soak.py [--minutes 20] [--model-uri mlflow_data/models/smollm2] [--base-url URL]

Starts the server on a free port (or uses --base-url, an exported container say) and runs, for --minutes, between 8
and 32 clients (the count changes every 30 s) that each loop over a mix: /ask, /ask/batch, /invocations, chat with
and without streaming, streams the client drops after two events, and bad requests (a wrong type, an empty question,
an unknown field, a non-JSON body). It reports the server's resident memory after 2 minutes and at the end (target:
growth under 10%), requests answered, 4xx by cause (the error body's ``type``), 429s and 5xx (target: none).
Answers are capped at 16 new tokens (or the server's lower cap, read from /openapi.json) so that the run exercises
many requests, not long answers. It exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTIONS = ["What is Python?", "What is the capital of France?", "How many days are in a week?", "What is MLflow?"]
TOKENS = 16
BAD = [  # (body, content type): each refused with a 4xx
    ({"question": "hi", "temperature": "0.5"}, "application/json"),
    ({"question": "   "}, "application/json"),
    ({"question": "hi", "colour": "blue"}, "application/json"),
    ("question\nhi", "text/csv"),
]


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.causes: Counter[str] = Counter()
        self.answered = 0
        self.dropped_streams = 0

    def record(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code < 300:
            self.answered += 1
        elif 400 <= response.status_code < 500:
            try:
                self.causes[response.json()["detail"][0]["type"]] += 1
            except (ValueError, KeyError, IndexError, TypeError):
                self.causes["unparsed"] += 1


async def one_request(client: httpx.AsyncClient, tally: Tally, rng: random.Random, tokens: int) -> None:
    question = rng.choice(QUESTIONS)
    kind = rng.choices(
        ["ask", "batch", "invocations", "chat", "chat_stream", "drop_stream", "bad"], [4, 2, 2, 2, 2, 1, 1]
    )[0]
    if kind == "ask":
        tally.record(await client.post("/ask", json={"question": question, "max_new_tokens": tokens}))
    elif kind == "batch":
        body = {"questions": rng.sample(QUESTIONS, 2), "max_new_tokens": tokens}
        tally.record(await client.post("/ask/batch", json=body))
    elif kind == "invocations":
        body = {"inputs": [question], "params": {"max_new_tokens": tokens}}
        tally.record(await client.post("/invocations", json=body))
    elif kind == "chat":
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": tokens}
        tally.record(await client.post("/v1/chat/completions", json=body))
    elif kind in ("chat_stream", "drop_stream"):
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": tokens, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                tally.record(response)
                return
            events = 0
            async for line in response.aiter_lines():
                events += line.startswith("data:")
                if kind == "drop_stream" and events == 2:
                    tally.dropped_streams += 1
                    break  # the client goes away mid-stream: the server must free the row
            tally.record(response)
    else:
        body, content_type = rng.choice(BAD)
        content = body if isinstance(body, str) else json.dumps(body)
        tally.record(await client.post("/ask", content=content, headers={"content-type": content_type}))


async def client_loop(base: str, tally: Tally, active: asyncio.Event, seed: int, stop_at: float, tokens: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        while time.monotonic() < stop_at:
            if not active.is_set():
                await active.wait()
                continue
            try:
                await one_request(client, tally, rng, tokens)
            except httpx.TransportError as exc:
                tally.causes[f"transport:{type(exc).__name__}"] += 1


def token_cap(base: str) -> int:
    """The server's max_new_tokens cap, as its /openapi.json states it."""
    schema = httpx.get(f"{base}/openapi.json", timeout=30).json()["components"]["schemas"]["AskRequest"]
    return int(next(a["maximum"] for a in schema["properties"]["max_new_tokens"]["anyOf"] if "maximum" in a))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def soak(base: str, seconds: float, pid: int | None, tokens: int) -> tuple[Tally, float | None, float | None]:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    gates = [asyncio.Event() for _ in range(32)]
    tasks = [asyncio.create_task(client_loop(base, tally, gates[i], i, stop_at, tokens)) for i in range(32)]
    rng = random.Random(0)
    early = None
    started = time.monotonic()
    while time.monotonic() < stop_at:
        clients = rng.randint(8, 32)
        for i, gate in enumerate(gates):
            gate.set() if i < clients else gate.clear()
        print(f"{time.monotonic() - started:6.0f} s: {clients} clients, {tally.answered} answered so far", flush=True)
        await asyncio.sleep(min(30, max(0.0, stop_at - time.monotonic())))
        if early is None and pid and time.monotonic() - started >= 120:
            early = rss_mib(pid)
    for gate in gates:
        gate.set()  # let the waiting clients see the deadline
    await asyncio.gather(*tasks)
    return tally, early, rss_mib(pid) if pid else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--model-uri", default=str(ROOT / "mlflow_data" / "models" / "smollm2"))
    parser.add_argument("--base-url", help="soak a server that is already running (its memory is not measured)")
    args = parser.parse_args()
    proc = None
    if args.base_url:
        base = args.base_url.rstrip("/")
    else:
        from benchmarks.servers import start
        from devservices.ports import free_port

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "serving", "--model-uri", args.model_uri, "--port", str(port)]
        proc, _ = start(command, dict(os.environ), f"{base}/health")
    try:
        tokens = min(TOKENS, token_cap(base))
        tally, early, end = asyncio.run(soak(base, args.minutes * 60, proc.pid if proc else None, tokens))
        alive = httpx.get(f"{base}/health", timeout=10).status_code == 200
    finally:
        if proc:
            from benchmarks.servers import stop

            stop(proc)

    errors_5xx = sum(n for status, n in tally.statuses.items() if status >= 500)
    print(f"\nsoak: {args.minutes:g} min, 8 to 32 clients, answers capped at {tokens} tokens, {base}")
    print(f"{'measure':<34} {'value':>12}")
    print(f"{'requests answered (2xx)':<34} {tally.answered:>12}")
    print(f"{'streams dropped mid-way by clients':<34} {tally.dropped_streams:>12}")
    for cause, count in sorted(tally.causes.items()):
        print(f"{'4xx ' + cause:<34} {count:>12}")
    print(f"{'429 (busy)':<34} {tally.statuses.get(429, 0):>12}")
    print(f"{'5xx':<34} {errors_5xx:>12}")
    print(f"{'healthy at the end':<34} {alive!s:>12}")
    if early and end:
        growth = (end - early) / early
        print(f"{'resident memory at 2 min, MiB':<34} {early:>12.0f}")
        print(f"{'resident memory at the end, MiB':<34} {end:>12.0f}")
        print(f"target: memory growth under 10%: {growth:+.1%}, {'met' if growth < 0.10 else 'NOT met'}")
    print(f"target: no 5xx: {errors_5xx}, {'met' if errors_5xx == 0 else 'NOT met'}")
    grew = early and end and (end - early) / early >= 0.10
    if errors_5xx or grew or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
