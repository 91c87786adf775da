"""Stage registry: a stage name -> its Stage class.

Built-in and third-party stages are found the same way, through the ``genai_lifecycle.stages`` entry-point group
(see pyproject.toml). A third party adds a stage without touching this project:

    [project.entry-points."genai_lifecycle.stages"]
    my-stage = "my_package.stages:MyStage"

Classes are imported only when a name is resolved, and an unknown name fails with the names that exist.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points

from lifecycle.stage import Stage, StageError

ENTRY_POINT_GROUP = "genai_lifecycle.stages"


class UnknownStageError(StageError):
    pass


class StageRegistry:
    def __init__(self, entries: dict[str, EntryPoint | type[Stage]]) -> None:
        self._entries = dict(entries)

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> StageRegistry:
        return cls({ep.name: ep for ep in entry_points(group=group)})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def register(self, name: str, stage_cls: type[Stage]) -> None:
        self._entries[name] = stage_cls

    def get(self, name: str) -> type[Stage]:
        if name not in self._entries:
            raise UnknownStageError(self._unknown_message(name))
        entry = self._entries[name]
        stage_cls = entry if isinstance(entry, type) else entry.load()
        if not (isinstance(stage_cls, type) and issubclass(stage_cls, Stage)):
            raise StageError(f"entry point {name!r} -> {stage_cls!r} is not a lifecycle.stage.Stage subclass")
        self._entries[name] = stage_cls
        return stage_cls

    def _unknown_message(self, name: str) -> str:
        available = self.names()
        if not available:
            return (
                f"unknown stage {name!r}: no stages are registered in entry-point group {ENTRY_POINT_GROUP!r}. "
                "Install the project first: pip install -e . (or run `make install`)."
            )
        hint = difflib.get_close_matches(name, available, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        return f"unknown stage {name!r}. Available stages: {', '.join(available)}.{suggestion}"
