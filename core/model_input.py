"""Questions out of the input shapes a pyfunc model accepts.

``extract_questions`` takes what ``PyFuncModel.predict`` hands a model: a pandas DataFrame (a ``question`` column, or
else the first column; a cell may hold a list of questions), a dict (``question`` or ``questions``), a list of strings
or dicts, or a plain string. It raises ValueError with the accepted shapes when none fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCEPTED = (
    "a string, a list of strings, a dict with 'question' (str) or 'questions' (list), a list of such dicts, "
    "or a DataFrame with a 'question' column"
)
QUESTION_KEYS = ("question", "questions", "prompt", "input")


def _flatten(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        for key in QUESTION_KEYS:
            if key in value:
                return _flatten(value[key])
        raise ValueError(f"no question found in keys {sorted(value)}; expected {ACCEPTED}")
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [q for item in value for q in _flatten(item)]
    raise ValueError(f"unsupported input {type(value).__name__}; expected {ACCEPTED}")


def extract_questions(model_input: Any) -> list[str]:
    columns = getattr(model_input, "columns", None)
    if columns is not None:  # a pandas DataFrame, without importing pandas here
        if len(columns) == 0:
            raise ValueError(f"empty DataFrame; expected {ACCEPTED}")
        column = next((c for c in QUESTION_KEYS if c in columns), columns[0])
        questions = _flatten(model_input[column])
    else:
        questions = _flatten(model_input)
    if not questions:
        raise ValueError(f"no questions in the input; expected {ACCEPTED}")
    return questions
