"""The Stage contract.

A stage is one class with a ``name`` and ``run(context) -> StageResult``. The runner builds every stage of a mode
first and calls ``preflight()`` on each (cheap checks, no heavy imports) before any real work, so a missing model or
a bad setting fails in seconds. Stages that set ``uses_tracking = False`` run without an MLflow run around them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from omegaconf import DictConfig


class StageError(RuntimeError):
    """A stage could not do its job; the message says why and what to do. ``lines`` are what the final summary
    prints under the failed stage (for example the scores behind a refusal)."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = list(lines or [])


@dataclass
class StageResult:
    stage: str
    status: str = "success"
    run_id: str | None = None
    duration_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # what the final summary prints for this stage
    error: str | None = None


@dataclass
class StageContext:
    """What a stage sees: the config, the results of earlier stages and objects they chose to share."""

    cfg: DictConfig
    parent_run_id: str | None = None
    results: dict[str, StageResult] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # in-process objects, e.g. the loaded model

    def output(self, key: str, default: Any = None) -> Any:
        """The latest value an earlier stage published under ``key``."""
        for result in reversed(list(self.results.values())):
            if key in result.outputs:
                return result.outputs[key]
        return default


class Stage(abc.ABC):
    name: ClassVar[str]
    uses_tracking: ClassVar[bool] = True

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Cheap checks before any stage runs; raise StageError to stop the whole invocation early."""

    @abc.abstractmethod
    def run(self, context: StageContext) -> StageResult: ...
