"""What a model URI points at, as a ``ServingSpec``: the Hugging Face folder plus its prompt and generation settings.

- ``models:/name@alias``, ``models:/name/version``, ``runs:/...``: through MLflow (the only place serving imports
  it), read in place from a local store, else downloaded into a temporary folder removed once the model is loaded;
  settings from the pyfunc's ``model_config`` in MLmodel.
- a folder holding an MLmodel file (a downloaded pyfunc): the same, read from disk.
- a plain Hugging Face folder (config.json): settings from an optional ``serving.json`` beside it, else the chat
  template when the tokenizer has one, a plain prompt otherwise. A folder with a ``manifest.json`` (an export) is
  checked against its sha256 checksums first: a corrupted or changed file is refused with its name.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import generation, manifest
from core.model_folder import ModelLoadError, load_model

SERVING_JSON = "serving.json"


@dataclass
class ServingSpec:
    folder: Path
    chat_format: str | None = None  # None: decided from the tokenizer once loaded
    dtype: str = "float32"
    threads: int | None = None
    max_input_tokens: int = generation.FALLBACK_MAX_INPUT_TOKENS
    system: str | None = None
    template: str = generation.FALLBACK_TEMPLATE
    generation: dict[str, Any] = field(default_factory=lambda: dict(generation.FALLBACK_GENERATION))
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None  # the experiment of the run that logged the model, where its traces go
    prompt_name: str | None = None
    prompt_version: str | None = None
    source_uri: str = ""
    eval_questions: list[str] = field(default_factory=list)  # the evaluation questions it was deployed with


def _from_config(folder: Path, config: dict, **info) -> ServingSpec:
    return ServingSpec(
        folder=folder,
        chat_format=config.get("chat_format"),
        dtype=config.get("dtype") or "float32",
        threads=config.get("threads"),
        max_input_tokens=config.get("max_input_tokens") or generation.FALLBACK_MAX_INPUT_TOKENS,
        system=config.get("system"),
        template=config.get("template") or generation.FALLBACK_TEMPLATE,
        generation={**generation.FALLBACK_GENERATION, **(config.get("generation") or {})},
        eval_questions=list(config.get("eval_questions") or []),
        prompt_name=config.get("prompt_name"),
        prompt_version=None if config.get("prompt_version") is None else str(config["prompt_version"]),
        **info,
    )


def load(spec: ServingSpec, device: str = "cpu"):
    """The model and tokenizer of ``spec``, on ``device`` (auto, cpu, cuda) and prepared for batched decoding
    (``serving.engine.kernels``). Without a chat format in its settings, the tokenizer decides: its chat template when
    it has one, a plain prompt otherwise."""
    import torch

    import serving.engine.kernels as kernels

    try:
        target = kernels.resolve_device(device)
    except RuntimeError as exc:
        raise ModelLoadError(str(exc)) from None
    loaded = load_model(spec.folder, spec.chat_format or "plain", kernels.load_dtype(target, spec.dtype), spec.threads)
    if spec.chat_format is None and loaded.tokenizer.chat_template:
        loaded.chat_format = "chat_template"
    try:
        kernels.prepare(loaded.model.to(target), getattr(torch, spec.dtype))
    except (ValueError, RuntimeError) as exc:  # int8 on a GPU, or a torch without the kernels the dtype needs
        raise ModelLoadError(f"cannot serve {spec.dtype} on {target}: {exc}") from None
    return loaded


def from_pyfunc_dir(root: Path, **info) -> ServingSpec:
    mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    pyfunc = mlmodel.get("flavors", {}).get("python_function", {})
    model_dir = pyfunc.get("artifacts", {}).get("model_dir", {}).get("path")
    if not model_dir:
        raise ModelLoadError(f"{root} is not a model logged by this project (no model_dir artifact in MLmodel)")
    info.setdefault("run_id", mlmodel.get("run_id"))
    return _from_config(root / model_dir, pyfunc.get("config") or {}, **info)


def from_folder(folder: Path, **info) -> ServingSpec:
    if (folder / "MLmodel").exists():
        return from_pyfunc_dir(folder, **info)
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"{folder} is neither a Hugging Face model folder (config.json) nor an MLflow model (MLmodel); "
            "pass models:/<name>@<alias>, runs:/<run>/<path> or such a folder"
        )
    try:
        manifest.verify(folder)
    except manifest.Mismatch as exc:
        raise ModelLoadError(f"refusing to serve {folder}: {exc}. Re-export the model or restore the file.") from None
    config_file = folder / SERVING_JSON
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    described = {key: config.get(key) for key in ("version", "alias", "run_id", "experiment_id")}
    return _from_config(folder, config, name=config.get("name") or folder.name, **described, **info)


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?$")


def _registry_info(uri: str) -> dict:
    from mlflow import MlflowClient

    match = _MODELS_URI.match(uri)
    if not match:
        return {}
    name, alias, version = match["name"], match["alias"], match["version"]
    client = MlflowClient()
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    experiment = client.get_run(mv.run_id).info.experiment_id if mv.run_id else None
    return {"name": name, "alias": alias, "version": str(mv.version), "run_id": mv.run_id, "experiment_id": experiment}


@contextlib.contextmanager
def resolved(uri: str) -> Iterator[ServingSpec]:
    """The spec of ``uri``, its folder readable inside the ``with`` block: a model MLflow downloads from a remote
    store (S3, a tracking server) is removed after it, so load what you need from the folder there."""
    if uri.startswith(("models:/", "runs:/")):
        try:
            import mlflow

            from core.artifacts import local_artifacts
        except ImportError as exc:
            raise ModelLoadError(f"{uri} needs MLflow installed; serve a local model folder instead") from exc
        with contextlib.ExitStack() as stack:
            try:
                info = _registry_info(uri)
                local = stack.enter_context(local_artifacts(uri))
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load {uri} from tracking URI {mlflow.get_tracking_uri()}: {exc}. Set MLFLOW_TRACKING_URI "
                    "to the backend that registered it, e.g. sqlite:///$PWD/mlflow_data/mlflow.db"
                ) from exc
            yield from_pyfunc_dir(local, source_uri=uri, **info)
        return
    folder = Path(uri).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    yield from_folder(folder.resolve(), source_uri=uri)
