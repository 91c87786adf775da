"""``python -m export --model-uri models:/langchain-e2e-model@champion --output-dir exported_model [--dtype bfloat16]
[--vendor-wheels]``: the same bundle as ``python main.py mode=export``, without Hydra or an MLflow run.

The model URI is read through MLflow (MLFLOW_TRACKING_URI; MLFLOW_S3_ENDPOINT_URL and the AWS variables when its
files are in S3), or is a local model folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from export.bundle import ExportSettings  # light: no torch, no MLflow

    defaults = {field.name: field.default for field in dataclasses.fields(ExportSettings)}
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model-uri", default=os.environ.get("MLFLOW_MODEL_URI"), help="models:/..., runs:/..., a folder"
    )
    parser.add_argument("--output-dir", type=Path, help=f"the build context (default {defaults['output_dir']})")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help=f"default {defaults['dtype']}")
    parser.add_argument("--vendor-wheels", action="store_true", help="put every wheel in the context (offline build)")
    parser.add_argument("--wheelhouse", type=Path, help="reuse and fill this folder of wheels (with --vendor-wheels)")
    parser.add_argument("--base-image", help=f"default {defaults['base_image']}")
    parser.add_argument("--port", type=int, help=f"the server's port in the container (default {defaults['port']})")
    args = parser.parse_args(argv)
    if not args.model_uri:
        parser.error("give --model-uri (or set MLFLOW_MODEL_URI), e.g. models:/langchain-e2e-model@champion")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from core.model_folder import ModelLoadError
    from export.bundle import ExportError, write

    given = {k: v for k, v in vars(args).items() if v not in (None, False)}  # the rest: ExportSettings' defaults
    settings = ExportSettings(**given)
    try:
        bundle = write(settings)
    except (ExportError, ModelLoadError) as exc:
        raise SystemExit(f"python -m export: {exc}") from None
    print(f"exported {args.model_uri} to {bundle.path} (model {bundle.model_bytes / 1e6:.0f} MB); then, with Docker:")
    print(f"  cd {bundle.path} && ./build.sh && ./run.sh && ./test.sh")


if __name__ == "__main__":
    main()
