"""Write a standalone build context for a registered model: everything a machine with only Docker (or Podman) needs to
build and run the HTTP server, and nothing it must not have (no MLflow, no boto3, no credentials, no model hub).

    output_dir/
      Dockerfile, .dockerignore   slim Python base, CPU-only torch, non-root user, HEALTHCHECK on /health, EXPOSE
      requirements.txt            the server's dependencies pinned to the tested versions (export.requirements)
      model/                      weights, tokenizer, generation and chat settings (serving.json), manifest.json
      app/                        the server's code: the packages core/ and serving/, whole, with the native
                                  decoding step compiled here (serving.engine.native)
      build.sh, run.sh, test.sh   build the image; run it (port, bind address, API key, batching from the env); check it
      README.md                   for the person on the remote machine, with the bf16 cost measured when exported so
      wheels/                     with vendor_wheels: every wheel, so the image builds with no network

The bundle is written beside ``output_dir`` and renamed into place, so a failed export leaves no half bundle; an
existing ``output_dir`` is replaced only if it is an earlier export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import manifest
from export import quality, requirements, templates
from serving.engine import native
from serving.engine.loader import SERVING_JSON, ServingSpec, resolved

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("core", "serving")  # what `python -m serving` imports, whole (tests/test_layering.py keeps it so)
LEFT_OUT = ("lifecycle-model.json", manifest.MANIFEST)  # the converter's marker names paths of the exporting machine
WEIGHTS = (".safetensors", ".bin")
BF16 = "bfloat16"  # the one spelling, as serve.dtype and --dtype say it
MARKER = ".export.json"  # identifies a folder as an export (so re-exporting may replace it)


class ExportError(RuntimeError):
    """The export cannot be written; the message says why and what to do."""


@dataclass
class ExportSettings:
    """What to export and how; the defaults are the exporter's, for ``python -m export`` and ``mode=export`` alike
    (conf/export/default.yaml reads them from here)."""

    model_uri: str
    output_dir: Path = Path("exported_model")
    dtype: str = "float32"  # float32 | bfloat16
    vendor_wheels: bool = False
    wheelhouse: Path | None = None  # wheels reused between exports (filled on demand)
    base_image: str = "python:3.11-slim"
    port: int = 8000
    questions: list[str] = field(default_factory=list)  # for the bf16 measurement; default: the model's own


@dataclass
class Bundle:
    path: Path
    spec: ServingSpec
    image: str
    model_bytes: int
    total_bytes: int
    quality: dict | None = None


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _copy_model(source: Path, dest: Path, dtype: str) -> None:
    dest.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in LEFT_OUT and not (dtype == BF16 and path.suffix in WEIGHTS):
            shutil.copy2(path, dest / path.name)
    if dtype == BF16:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
        model.save_pretrained(dest)  # writes the bf16 weights and a config.json that says so


def _serving_json(spec: ServingSpec, dtype: str) -> dict:
    return {
        "name": spec.name,
        "version": spec.version,
        "alias": spec.alias,
        "run_id": spec.run_id,
        "experiment_id": spec.experiment_id,  # where the container's traces go by default (SERVING_TRACES_URL)
        "prompt_name": spec.prompt_name,
        "prompt_version": spec.prompt_version,
        "source_uri": spec.source_uri,
        "chat_format": spec.chat_format,
        "dtype": BF16 if dtype == BF16 else spec.dtype,
        "threads": spec.threads,
        "max_input_tokens": spec.max_input_tokens,
        "system": spec.system,
        "template": spec.template,
        "generation": spec.generation,
        "eval_questions": spec.eval_questions,
    }


def _copy_app(dest: Path) -> None:
    for package in APP_PACKAGES:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    # the native decoding step built here, beside its source: the image has no compiler (serving.engine.native)
    try:
        built = native.build(dest / "serving" / "engine" / "native")
        log.info("bundled the native decoding step (%s)", built.name)
    except native.NativeUnavailable as exc:
        log.warning("the bundle's server will decode small bfloat16 batches in PyTorch: %s", exc)


def _vendor_wheels(bundle: Path, wheelhouse: Path | None) -> None:
    """Every wheel the image installs, into ``bundle/wheels``. With a wheelhouse (kept between exports), wheels are
    downloaded there only when missing, and exactly the pinned versions are copied."""
    wheels, listed = bundle / "wheels", str(bundle / "requirements.txt")
    wheels.mkdir()
    if wheelhouse is None:
        requirements.download(str(wheels), listed)
        return
    wheelhouse.mkdir(parents=True, exist_ok=True)
    requirements.download(str(wheelhouse), listed, wheelhouse=str(wheelhouse))
    pins = requirements.read(listed)
    for wheel in wheelhouse.glob("*.whl"):
        name, version = requirements.wheel_pin(wheel.name)
        if pins.get(name) == version:
            shutil.copy2(wheel, wheels / wheel.name)
    missing = pins.keys() - {requirements.wheel_pin(w.name)[0] for w in wheels.glob("*.whl")}
    if missing:
        raise ExportError(f"no wheel for {sorted(missing)} in {wheelhouse}; check the package index and export again")


def check_output_dir(output_dir: Path) -> None:
    """ExportError unless ``output_dir`` is free: missing, empty, or an earlier export (which may be replaced)."""
    output_dir = output_dir.resolve()
    if output_dir.is_file() or (
        output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / MARKER).exists()
    ):
        raise ExportError(
            f"{output_dir} exists and is not an earlier export: choose another export.output_dir (a folder is "
            "only replaced when an export wrote it)"
        )


def _prepare(output_dir: Path) -> Path:
    check_output_dir(output_dir)
    partial = output_dir.with_name(f".{output_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _fill(partial: Path, spec: ServingSpec, settings: ExportSettings) -> tuple[str, dict | None]:
    """Everything the bundle holds, into ``partial``; returns the image name and the bf16 measurement, if any."""
    _copy_model(spec.folder, partial / "model", settings.dtype)
    (partial / "model" / SERVING_JSON).write_text(json.dumps(_serving_json(spec, settings.dtype), indent=2) + "\n")
    manifest.write(partial / "model")
    _copy_app(partial / "app")
    (partial / "requirements.txt").write_text("\n".join(requirements.lines()) + "\n")
    if settings.vendor_wheels:
        _vendor_wheels(partial, settings.wheelhouse)
    measured = None
    if settings.dtype == BF16:
        questions = settings.questions or spec.eval_questions
        if not questions:
            raise ExportError(
                f"{settings.model_uri} carries no evaluation questions to measure what bf16 costs: export it with "
                "mode=export (which uses conf/eval), or deploy it again with this version so that it carries them"
            )
        measured = quality.compare(spec, partial / "model", questions)
    image = templates.image_name(spec)
    templates.render_all(partial, spec, settings, image, measured, folder_bytes(partial / "model"))
    (partial / MARKER).write_text(json.dumps({"model_uri": settings.model_uri, "dtype": settings.dtype}) + "\n")
    _readable(partial)
    return image, measured


def write(settings: ExportSettings) -> Bundle:
    started = time.perf_counter()
    output_dir = settings.output_dir.resolve()
    with resolved(settings.model_uri) as spec:  # a plain folder keeps no chat format: the server decides, as it does
        partial = _prepare(output_dir)
        try:
            image, measured = _fill(partial, spec, settings)
            shutil.rmtree(output_dir, ignore_errors=True)
            partial.rename(output_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    bundle = Bundle(output_dir, spec, image, folder_bytes(output_dir / "model"), folder_bytes(output_dir), measured)
    log.info("exported %s to %s in %.1f s", settings.model_uri, output_dir, time.perf_counter() - started)
    return bundle


def _readable(bundle: Path) -> None:
    """Files 0644 (scripts 0755), folders 0755: the image copies modes, and its user is not the files' owner."""
    for path in [bundle, *bundle.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.suffix == ".sh" else 0o644)
