"""``python -m serving --model-uri models:/langchain-e2e-model@champion [--host 127.0.0.1] [--port 5001]``.

Also reads MLFLOW_MODEL_URI, MLFLOW_TRACKING_URI and SERVING_* variables (see serving.http.settings); ``--dtype``
(float32 | bfloat16) and ``--device`` (auto | cpu | cuda) override SERVING_DTYPE and SERVING_DEVICE. /health answers 503
while the model loads. If it cannot load (a missing model, a file that fails its checksum), the server stops and
the process exits 1 with the reason: a server that cannot answer should not look alive. ``--check`` runs the same
load and one answer without HTTP, then exits: the exported Dockerfile runs it at build time.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--model-uri", help="models:/name@alias, runs:/..., or a model folder (env MLFLOW_MODEL_URI)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 5001)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        help="int8: 8-bit weights and activations (CPU); default: the model's own, float32 unless exported in bfloat16",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: cuda when available")
    parser.add_argument(
        "--traces-url",
        help="export a trace of every answer to this MLflow tracking server or OTLP/HTTP collector (env "
        "SERVING_TRACES_URL; the experiment: SERVING_TRACES_EXPERIMENT_ID, default the model's run's)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the model, answer one short question through the batcher, exit 0 (a smoke test; no HTTP)",
    )
    args = parser.parse_args(argv)

    from serving.http.settings import Settings

    try:
        settings = Settings.from_env(
            model_uri=args.model_uri,
            host=args.host,
            port=args.port,
            dtype=args.dtype,
            device=args.device,
            traces_url=args.traces_url,
        )
    except ValidationError as exc:
        parser.error(f"{exc}\nGive --model-uri or set MLFLOW_MODEL_URI.")
    if args.check:
        import asyncio

        print(asyncio.run(check(settings)), flush=True)
        return

    error = serve(settings)
    if error:
        raise SystemExit(f"python -m serving: the model did not load: {error}")


def serve(settings) -> str | None:
    """Run the server until it is stopped; a model that fails to load stops it at once. Returns why it failed to
    load, or None. (``mode=serve serve.run=true`` runs the same.)"""
    import uvicorn

    from serving.http.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=settings.drain_s
    )
    server = uvicorn.Server(config)
    state = app.state.serving
    state.on_failure = lambda: setattr(server, "should_exit", True)
    server.run()
    return state.error


async def check(settings) -> str:
    """The server's own path, without HTTP: load (checksums included), one greedy answer through the engine."""
    from serving.http.state import ServingState

    state = ServingState(settings)
    await state.load()
    if state.error:
        raise SystemExit(f"python -m serving --check: the model did not load: {state.error}")
    engine = state.engine
    try:
        request = {**engine.spec.generation, "max_new_tokens": 8, "temperature": 0.0}
        answer = await engine.submit(engine.sequence(engine.render("What is two plus two?"), request))
    finally:
        await engine.stop()
    return f"ok: {state.model_id} answers: {engine.decode(answer.tokens)!r}"


if __name__ == "__main__":
    main()
