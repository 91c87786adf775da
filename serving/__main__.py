"""``python -m serving --model-uri models:/langchain-e2e-model@champion [--host 127.0.0.1] [--port 5001]``.

Also reads MLFLOW_MODEL_URI, MLFLOW_TRACKING_URI and SERVING_* variables (see serving.settings).
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--model-uri", help="models:/name@alias, runs:/..., or a model folder (env MLFLOW_MODEL_URI)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 5001)")
    args = parser.parse_args(argv)

    from serving.settings import Settings

    try:
        settings = Settings.from_env(model_uri=args.model_uri, host=args.host, port=args.port)
    except ValidationError as exc:
        parser.error(f"{exc}\nGive --model-uri or set MLFLOW_MODEL_URI.")

    import uvicorn

    from serving.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
