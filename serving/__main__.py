"""``python -m serving --model-uri models:/langchain-e2e-model@champion [--host 127.0.0.1] [--port 5001]``.

Also reads MLFLOW_MODEL_URI, MLFLOW_TRACKING_URI and SERVING_* variables (see serving.http.settings); ``--dtype``
(float32 | bfloat16) and ``--device`` (auto | cpu | cuda) override SERVING_DTYPE and SERVING_DEVICE. /health answers 503
while the model loads. If it cannot load (a missing model, a file that fails its checksum), the server stops and
the process exits 1 with the reason: a server that cannot answer should not look alive. ``--check`` runs the same
load and one answer without HTTP, then exits: the exported Dockerfile runs it at build time.

``--backend ray --ray-address HOST:PORT [--replicas N | --max-replicas M]`` deploys the same server as a Ray Serve
application on a running cluster instead (serving.replicas) and exits once every replica is ready; deploying again
under the same ``--app-name`` rolls out the new version, ``--undeploy`` deletes the application.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from serving.replicas import Fleet


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
    fleet = parser.add_argument_group("replicas on a Ray cluster (--backend ray)")
    fleet.add_argument("--backend", choices=["local", "ray"], default="local", help="default local: this process")
    fleet.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="host:port (env RAY_ADDRESS)")
    fleet.add_argument("--app-name", default=Fleet.app_name, help=f"default {Fleet.app_name}")
    fleet.add_argument(
        "--replicas", type=int, default=Fleet.replicas, help="fixed replicas, or the autoscaling minimum"
    )
    fleet.add_argument("--max-replicas", type=int, help="autoscale between --replicas and this")
    fleet.add_argument("--cpus-per-replica", type=float, default=Fleet.cpus_per_replica)
    fleet.add_argument("--undeploy", action="store_true", help="delete the application, then exit")
    args = parser.parse_args(argv)
    if args.backend == "ray":
        fleet = fleet_of(parser, args)
        if args.undeploy:
            from serving.replicas import undeploy

            try:
                print(f"{fleet.app_name}: {'deleted' if undeploy(fleet) else 'not deployed'}", flush=True)
            except RuntimeError as exc:
                raise SystemExit(f"python -m serving --undeploy: {exc}") from None
            return

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
    if args.backend == "ray":
        raise SystemExit(on_ray(fleet, settings))
    if args.check:
        import asyncio

        print(asyncio.run(check(settings)), flush=True)
        return

    error = serve(settings)
    if error:
        raise SystemExit(f"python -m serving: the model did not load: {error}")


def fleet_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Fleet:
    if not args.ray_address:
        parser.error("--backend ray needs the cluster: --ray-address HOST:PORT or RAY_ADDRESS")
    return Fleet(
        address=args.ray_address,
        app_name=args.app_name,
        replicas=args.replicas,
        min_replicas=args.replicas,
        max_replicas=args.max_replicas,
        cpus_per_replica=args.cpus_per_replica,
    )


def on_ray(fleet: Fleet, settings) -> int:
    """``--backend ray``: deploy and say where; 1 with the reason when the cluster cannot run it."""
    from serving.replicas import deploy

    try:
        url = deploy(settings, fleet)
    except (ValueError, RuntimeError) as exc:
        print(f"python -m serving --backend ray: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"{settings.model_uri}: application {fleet.app_name} on {fleet.address} answers at {url}", flush=True)
    return 0


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
