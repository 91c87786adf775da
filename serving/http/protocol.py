"""The MLflow scoring protocol for ``POST /invocations``, as ``mlflow models serve`` speaks it.

Request: a JSON object with exactly one of ``dataframe_split`` ({"columns": [...], "data": [[...]]}),
``dataframe_records`` ([{"question": ...}, ...]), ``instances`` or ``inputs`` (a string, a list of strings or of
{"question": ...} objects), and optionally ``params`` (max_new_tokens, temperature, top_p, repetition_penalty).
Response: ``{"predictions": [answer, ...]}``, one answer per question, in order.
"""

from __future__ import annotations

from typing import Any

from core.model_input import extract_questions

DATAFRAME_SPLIT = "dataframe_split"
DATAFRAME_RECORDS = "dataframe_records"
INSTANCES = "instances"
INPUTS = "inputs"
PARAMS = "params"
INPUT_KEYS = (DATAFRAME_SPLIT, DATAFRAME_RECORDS, INSTANCES, INPUTS)


class ProtocolError(ValueError):
    """The payload does not follow the protocol; the message says what it should be."""


def _split_questions(split: Any) -> list[str]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise ProtocolError('dataframe_split must be {"columns": ["question"], "data": [["..."], ...]}')
    columns = split.get("columns") or []
    column = columns.index("question") if "question" in columns else 0
    try:
        return [row[column] if isinstance(row, list) else row for row in split["data"]]
    except IndexError:
        raise ProtocolError("a dataframe_split row is shorter than its columns") from None


def _record_questions(records: Any) -> list[Any]:
    if not isinstance(records, list) or not all(isinstance(r, dict) and r for r in records):
        raise ProtocolError('dataframe_records must be a list of objects, e.g. [{"question": "..."}]')
    return [r["question"] if "question" in r else next(iter(r.values())) for r in records]


def parse_invocation(payload: Any) -> tuple[list[str], dict[str, Any]]:
    """(questions, params) from a request body, or ProtocolError."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"the body must be a JSON object with one of {', '.join(INPUT_KEYS)}")
    present = [key for key in INPUT_KEYS if key in payload]
    if len(present) != 1:
        raise ProtocolError(f"give exactly one of {', '.join(INPUT_KEYS)} (got {present or 'none'})")
    unknown = set(payload) - {*INPUT_KEYS, PARAMS}
    if unknown:
        raise ProtocolError(f"unknown keys {sorted(unknown)}; allowed: {', '.join((*INPUT_KEYS, PARAMS))}")
    key = present[0]
    raw = payload[key]
    if key == DATAFRAME_SPLIT:
        raw = _split_questions(raw)
    elif key == DATAFRAME_RECORDS:
        raw = _record_questions(raw)
    try:
        questions = extract_questions(raw)
    except ValueError as exc:
        raise ProtocolError(f"{key}: {exc}") from None
    if not all(isinstance(q, str) for q in questions):
        raise ProtocolError(f"{key}: every question must be a string")
    params = payload.get(PARAMS) or {}
    if not isinstance(params, dict):
        raise ProtocolError('params must be an object, e.g. {"max_new_tokens": 32}')
    return questions, params
