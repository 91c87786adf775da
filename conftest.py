"""Fixtures shared by tests/ and features/: the real offline model, converted once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The folder holding the converted offline model (the first conversion takes ~25 s; it is half a gigabyte, so
    one per session). Set LIFECYCLE_TEST_MODEL_CACHE to keep it between sessions."""
    from hydra import compose, initialize_config_dir

    from lifecycle.config import register_configs
    from lifecycle.integrations.models import MARKER, resolve_model_folder

    cache = Path(os.environ.get("LIFECYCLE_TEST_MODEL_CACHE") or tmp_path_factory.mktemp("model-cache"))
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.model_cache={cache}", "data_dir=unused"])
    folder = resolve_model_folder(cfg.model, cache)
    assert (folder / MARKER).exists()
    return cache


@pytest.fixture(scope="session")
def smollm2(model_cache):
    """The real offline model (SmolLM2-135M-Instruct), loaded once per session."""
    from lifecycle.integrations.models import load_model

    return load_model(model_cache / "smollm2", "chat_template")
