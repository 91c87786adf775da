"""What a run prints: the lifecycle's own lines and its summary.

Library output that means nothing to the person running the lifecycle is filtered here, at the edge, unless
``verbose=true``: MLflow's advice to add type hints to ``predict``, its evaluation banner and registry messages,
download and weight-loading progress bars, a "View run" link per run on a tracking server, and the INFO
chatter of MLflow, alembic, httpx and transformers.
``configure`` is called once per invocation; ``library_output_hidden`` wraps a library call that prints.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "httpx", "transformers", "langchain")
# MLflow, at every log and load of a pyfunc. Its log and load functions reset the warning filters ("once"), so the
# warning is dropped where warnings are shown, not by a filter.
NOISY_WARNINGS = ("Add type hints to the `predict` method",)
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also transformers' (read when it is imported)
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow sets its loggers' level when it is imported
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "View run at ..." per run on a tracking server: the summary
}

CHECKOUT_COMMAND = "python main.py"
INSTALLED_COMMAND = "genai-lifecycle"  # [project.scripts] in pyproject.toml


def command() -> str:
    """How the user started this run, for the commands that errors and hints suggest: ``genai-lifecycle`` when
    that is what ran, else ``python main.py`` (a checkout, or a worker that only knows the job)."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return INSTALLED_COMMAND if program == INSTALLED_COMMAND else CHECKOUT_COMMAND


_verbose = True  # until configure() says otherwise: code used outside the CLI prints what it always did


def configure(verbose: bool) -> None:
    global _verbose
    _verbose = verbose
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not getattr(warnings.showwarning, "drops_noise", False):
        warnings.showwarning = _without_noise(warnings.showwarning)


def _without_noise(show):
    def showwarning(message, *args, **kwargs):
        if not any(noise in str(message) for noise in NOISY_WARNINGS):
            show(message, *args, **kwargs)

    showwarning.drops_noise = True
    return showwarning


@contextlib.contextmanager
def library_output_hidden() -> Iterator[None]:
    """What a library prints to stdout or stderr inside the block, dropped (kept with verbose=true)."""
    if _verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
