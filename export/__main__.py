"""``python -m export --model-uri models:/langchain-e2e-model@champion --output-dir exported_model [--dtype bf16]
[--vendor-wheels]``: the same bundle as ``python main.py mode=export``, without Hydra or an MLflow run.

The model URI is read through MLflow (MLFLOW_TRACKING_URI; MLFLOW_S3_ENDPOINT_URL and the AWS variables when its
files are in S3), or is a local model folder.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model-uri", default=os.environ.get("MLFLOW_MODEL_URI"), help="models:/..., runs:/..., a folder"
    )
    parser.add_argument("--output-dir", default="exported_model", help="the build context (default ./exported_model)")
    parser.add_argument("--dtype", choices=["float32", "bf16"], default="float32")
    parser.add_argument("--vendor-wheels", action="store_true", help="put every wheel in the context (offline build)")
    parser.add_argument("--wheelhouse", type=Path, help="reuse and fill this folder of wheels (with --vendor-wheels)")
    parser.add_argument("--base-image", default="python:3.11-slim")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not args.model_uri:
        parser.error("give --model-uri (or set MLFLOW_MODEL_URI), e.g. models:/langchain-e2e-model@champion")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from core.model_folder import ModelLoadError
    from export.bundle import ExportError, ExportSettings, write

    settings = ExportSettings(
        model_uri=args.model_uri,
        output_dir=Path(args.output_dir),
        dtype=args.dtype,
        vendor_wheels=args.vendor_wheels,
        wheelhouse=args.wheelhouse,
        base_image=args.base_image,
        port=args.port,
    )
    try:
        bundle = write(settings)
    except (ExportError, ModelLoadError) as exc:
        raise SystemExit(f"python -m export: {exc}") from None
    print(f"exported {args.model_uri} to {bundle.path} (model {bundle.model_bytes / 1e6:.0f} MB); then, with Docker:")
    print(f"  cd {bundle.path} && ./build.sh && ./run.sh && ./test.sh")


if __name__ == "__main__":
    main()
