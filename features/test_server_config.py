from __future__ import annotations

from pytest_bdd import scenarios

scenarios("server_config.feature")
