"""Fixtures for the fast unit tests: Hydra composition against conf/ and a tiny random model made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lifecycle.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> the config main.py would get, with data_dir in a temporary folder; with_hydra=True
    keeps the hydra node too (as a Hydra callback sees the config)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):

        def _compose(*overrides: str, with_hydra: bool = False):
            return compose(
                config_name="config",
                overrides=[f"data_dir={tmp_path / 'data'}", *overrides],
                return_hydra_config=with_hydra,
            )

        yield _compose
    GlobalHydra.instance().clear()
