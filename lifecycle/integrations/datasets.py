"""Evaluation sets as MLflow evaluation datasets (``mlflow.genai.datasets``), and which one a run used.

``conf/eval/<name>.yaml`` becomes the dataset ``eval-<name>`` in the run's experiment: created the first time,
its records replaced when the YAML's content changes, left alone otherwise. MLflow keeps no dataset versions outside
Databricks (its ``digest`` changes on every write, even an identical one, and not on deletes), so the version is
ours: a counter in the tag ``lifecycle.dataset_version``, raised with each content change, beside the content's
sha256 in ``lifecycle.content_sha256``. ``eval.dataset=<name>`` instead selects a dataset that already exists (built
in the UI or from traces); its version is that counter where it has one, else MLflow's digest.

Production questions that ``mode=monitor monitor.harvest=true`` adds (``harvest``) are records whose source is
their trace (MLflow's ``TRACE`` source type, the trace id as source id): a change of the YAML replaces the YAML's own
records and keeps these, and every run after answers both. Each harvest raises the version too.

Every run that answers the set records it: as the run's dataset input (context "evaluation", visible in the UI)
and as the tags ``lifecycle.dataset`` / ``lifecycle.dataset_version``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.genai import datasets as genai_datasets

from lifecycle import tags
from lifecycle.stage import StageError

PREFIX = "eval-"
CONTEXT = "evaluation"
FROM_TRACE = "TRACE"  # the source type of a harvested record (mlflow.entities.DatasetRecordSourceType)
HARVEST_REASON = "lifecycle.harvest_reason"  # a harvested record's tag: why it was taken


@dataclass(frozen=True)
class Question:
    """One record of an evaluation set, in the shape the stages and scorers read (like conf/eval's entries)."""

    question: str
    expected_answer: str | None = None
    expected_facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    dataset_id: str
    version: str
    questions: tuple[Question, ...]
    dataset: Any = field(repr=False, compare=False)


def records(questions: Sequence) -> list[dict]:
    """conf/eval's questions as dataset records: the question as input, the expected answer and facts as
    expectations."""
    out = []
    for q in questions:
        expectations: dict[str, Any] = {"expected_facts": list(q.expected_facts)}
        if q.expected_answer:
            expectations["expected_response"] = q.expected_answer
        out.append({"inputs": {"question": q.question}, "expectations": expectations})
    return out


def content_sha256(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _find(name: str):
    """The oldest dataset with this name (names are not unique in MLflow), or None."""
    hits = genai_datasets.search_datasets(filter_string=f"name = '{name}'", order_by=["created_time ASC"])
    return hits[0] if hits else None


def _reload(dataset):
    return genai_datasets.get_dataset(dataset_id=dataset.dataset_id)  # the handle merge_records returns is stale


def synced(name: str, questions: Sequence, experiment_id: str) -> EvaluationSet:
    """The dataset ``name`` holding exactly ``questions``: created, replaced on a content change, else untouched."""
    rows = records(questions)
    digest = content_sha256(rows)
    dataset = _find(name) or genai_datasets.create_dataset(name=name, experiment_id=experiment_id)
    if _tags(dataset).get(tags.DATASET_CONTENT) != digest:
        if stale := [r["dataset_record_id"] for r in _records(dataset) if not _harvested(r)]:
            dataset.delete_records(stale)  # the YAML's part replaced whole: a question removed leaves the dataset
        try:
            dataset.merge_records(rows)
        except Exception:
            if not _holds(_reload(dataset), rows):
                raise
            # another process synced the same questions at the same moment (two jobs, one dataset): MLflow keeps
            # one record per input, so what it wrote is what this one would have
        dataset = _next_version(dataset, {tags.DATASET_CONTENT: digest})
    kept = [Question(q.question, q.expected_answer or None, tuple(q.expected_facts)) for q in questions]
    harvested = [_question(dataset, r) for r in _records(dataset) if _harvested(r)]
    questions_now = tuple(kept + sorted(harvested, key=lambda q: q.question))
    return EvaluationSet(name, dataset.dataset_id, _tags(dataset)[tags.DATASET_VERSION], questions_now, dataset)


def _next_version(dataset, extra: dict[str, str] | None = None):
    """The dataset, reloaded, with its version counter raised (and ``extra`` tags set with it)."""
    version = int(_tags(dataset).get(tags.DATASET_VERSION, "0")) + 1
    genai_datasets.set_dataset_tags(
        dataset_id=dataset.dataset_id, tags={**(extra or {}), tags.DATASET_VERSION: str(version)}
    )
    return _reload(dataset)


def _harvested(record: dict) -> bool:
    return record.get("source_type") == FROM_TRACE


def _holds(dataset, rows: list[dict]) -> bool:
    """Whether ``dataset``'s own records (not the harvested ones) are exactly those ``rows`` describe."""
    held = sorted(
        json.dumps([r["inputs"], r["expectations"]], sort_keys=True) for r in _records(dataset) if not _harvested(r)
    )
    return held == sorted(json.dumps([r["inputs"], r["expectations"]], sort_keys=True) for r in rows)


def harvest(evaluation_set: EvaluationSet, harvested: Sequence) -> EvaluationSet:
    """``harvested`` (``lifecycle.monitoring.Harvested``) added to the set's dataset as records from their traces,
    the corrected answer as the expected response where there is one; the version raised. Unchanged when empty."""
    if not harvested:
        return evaluation_set
    rows = []
    for h in harvested:
        expectations: dict[str, Any] = {"expected_facts": []}
        if h.expected_answer:
            expectations["expected_response"] = h.expected_answer
        rows.append(
            {
                "inputs": {"question": h.question},
                "expectations": expectations,
                "source": {"source_type": FROM_TRACE, "source_data": {"trace_id": h.trace_id}},
                "tags": {HARVEST_REASON: "; ".join(h.reasons)},
            }
        )
    dataset = evaluation_set.dataset
    dataset.merge_records(rows)
    dataset = _next_version(dataset)
    known = {q.question for q in evaluation_set.questions}
    added = sorted((_question(dataset, r) for r in _records(dataset) if _harvested(r)), key=lambda q: q.question)
    questions = evaluation_set.questions + tuple(q for q in added if q.question not in known)
    return EvaluationSet(
        evaluation_set.name, dataset.dataset_id, _tags(dataset)[tags.DATASET_VERSION], questions, dataset
    )


def _records(dataset) -> list[dict]:
    frame = dataset.to_df()
    return frame.to_dict("records") if len(frame) else []


def _tags(dataset) -> dict[str, str]:
    return dict(dataset.tags or {})


def existing(name: str) -> EvaluationSet:
    """A dataset that is already in MLflow, by name; a StageError that lists the ones there are otherwise."""
    dataset = _find(name)
    if dataset is None:
        known = sorted({d.name for d in genai_datasets.search_datasets(filter_string="name LIKE '%'")})
        raise StageError(
            f"eval.dataset={name}: no evaluation dataset with that name in {mlflow.get_tracking_uri()}"
            + (f"; there are: {', '.join(known)}" if known else "; there are none yet")
            + ". Leave eval.dataset unset to use conf/eval/<name>.yaml (eval=<name>)."
        )
    version = _tags(dataset).get(tags.DATASET_VERSION) or f"digest-{dataset.digest}"
    return EvaluationSet(name, dataset.dataset_id, version, _questions(dataset), dataset)


def _questions(dataset) -> tuple[Question, ...]:
    out = [_question(dataset, record) for record in _records(dataset)]
    if not out:
        raise StageError(f"evaluation dataset {dataset.name!r} has no records: add some, or pick another.")
    return tuple(sorted(out, key=lambda q: q.question))  # MLflow returns records in no fixed order


def _question(dataset, record: dict) -> Question:
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    question = inputs.get("question")
    if not isinstance(question, str) or not question.strip():
        raise StageError(
            f"evaluation dataset {dataset.name!r}: record {record.get('dataset_record_id')} has no text under "
            f"inputs.question (its inputs: {sorted(inputs)}). This project asks questions: give every record "
            "inputs={'question': ...}."
        )
    expectations = record.get("expectations") if isinstance(record.get("expectations"), dict) else {}
    facts = expectations.get("expected_facts") or []
    return Question(question, expectations.get("expected_response"), tuple(str(f) for f in facts))


def record_use(evaluation_set: EvaluationSet) -> None:
    """The active run used this set: its dataset input, and tags with the name and version."""
    try:
        mlflow.log_input(evaluation_set.dataset, context=CONTEXT)
    except mlflow.MlflowException as error:
        if not _lost_insert_race(error):
            raise
        # Two runs of one experiment logged the same dataset at the same moment: MLflow looks for the
        # (experiment, name, digest) row, finds none in both, and the second insert breaks the unique key
        # (PostgreSQL says so; SQLite serialises the writers). The row now exists, so a second try links to it.
        mlflow.log_input(evaluation_set.dataset, context=CONTEXT)
    mlflow.set_tags({tags.DATASET: evaluation_set.name, tags.DATASET_VERSION: evaluation_set.version})


def _lost_insert_race(error: Exception) -> bool:
    text = str(error)
    return any(sign in text for sign in ("UniqueViolation", "duplicate key value", "UNIQUE constraint failed"))
