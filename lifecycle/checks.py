"""Checks that must run before Hydra writes anything (its run folder lives under data_dir): a Hydra callback,
registered in conf/hydra/default.yaml, that stops the run with a message that says what to do."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback

from lifecycle.config import url_as_local_folder


class LocalDataDir(Callback):
    """``data_dir`` must be a local folder: a URL stops the run before its first file, naming the command meant."""

    def _check(self, config: Any) -> None:
        if problem := url_as_local_folder(config.data_dir):
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(2)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config)
