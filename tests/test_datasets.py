"""Evaluation sets as MLflow evaluation datasets on a real embedded MLflow backend (integrations/datasets.py)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.genai import datasets as genai_datasets

from lifecycle import tags
from lifecycle.integrations import datasets
from lifecycle.stage import StageError

YAML = [
    datasets.Question("What is Python?", "Python is a programming language.", ("programming language",)),
    datasets.Question("Who wrote Romeo and Juliet?", None, ("Shakespeare",)),
]


@pytest.fixture
def experiment_id(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield mlflow.set_experiment("datasets").experiment_id
    mlflow.set_tracking_uri(None)


def stored(name: str) -> list:
    (dataset,) = genai_datasets.search_datasets(filter_string=f"name = '{name}'")
    return dataset, sorted(r["inputs"]["question"] for r in dataset.to_df().to_dict("records"))


def test_the_yaml_becomes_version_1_and_an_unchanged_yaml_stays_there(experiment_id):
    first = datasets.synced("eval-x", YAML, experiment_id)
    again = datasets.synced("eval-x", YAML, experiment_id)
    dataset, questions = stored("eval-x")
    assert (first.version, again.version, again.dataset_id) == ("1", "1", first.dataset_id)
    assert questions == sorted(q.question for q in YAML)
    assert dataset.last_update_time == genai_datasets.get_dataset(dataset_id=first.dataset_id).last_update_time
    assert [q.question for q in again.questions] == [q.question for q in YAML]  # the YAML's order


def test_a_changed_yaml_replaces_the_records_and_raises_the_version(experiment_id):
    datasets.synced("eval-x", YAML, experiment_id)
    changed = [YAML[0], datasets.Question("What is the capital of France?", None, ("Paris",))]
    result = datasets.synced("eval-x", changed, experiment_id)
    _, questions = stored("eval-x")
    assert result.version == "2"
    assert questions == ["What is Python?", "What is the capital of France?"]  # Romeo and Juliet is gone
    assert datasets.synced("eval-x", YAML, experiment_id).version == "3"  # back again: content changed again


def test_an_existing_dataset_is_selected_by_name_with_its_expectations(experiment_id):
    dataset = genai_datasets.create_dataset(name="from-traces", experiment_id=experiment_id)
    dataset.merge_records(
        [
            {"inputs": {"question": "b?"}, "expectations": {"expected_response": "B", "expected_facts": ["b"]}},
            {"inputs": {"question": "a?"}},
        ]
    )
    chosen = datasets.existing("from-traces")
    assert chosen.questions == (datasets.Question("a?"), datasets.Question("b?", "B", ("b",)))
    assert chosen.version.startswith("digest-")  # not one of ours: MLflow's digest names the version


def test_a_missing_dataset_names_the_ones_there_are(experiment_id):
    datasets.synced("eval-x", YAML, experiment_id)
    with pytest.raises(StageError, match=r"eval.dataset=nope: no evaluation dataset .* there are: eval-x"):
        datasets.existing("nope")


def test_records_without_a_question_are_refused_with_what_they_hold(experiment_id):
    dataset = genai_datasets.create_dataset(name="chat-traces", experiment_id=experiment_id)
    dataset.merge_records([{"inputs": {"messages": [{"role": "user", "content": "hi"}]}}])
    with pytest.raises(StageError, match=r"has no text under inputs.question \(its inputs: \['messages'\]\)"):
        datasets.existing("chat-traces")


def test_a_run_records_the_dataset_and_its_version(experiment_id):
    evaluation_set = datasets.synced("eval-x", YAML, experiment_id)
    with mlflow.start_run() as run:
        datasets.record_use(evaluation_set)
    recorded = mlflow.get_run(run.info.run_id)
    assert recorded.data.tags[tags.DATASET] == "eval-x" and recorded.data.tags[tags.DATASET_VERSION] == "1"
    (used,) = recorded.inputs.dataset_inputs
    assert (used.dataset.name, used.dataset.source_type) == ("eval-x", "mlflow_evaluation_dataset")


def test_a_run_that_loses_the_race_to_log_the_dataset_links_to_the_winners_row(experiment_id, monkeypatch):
    # Two processes of one experiment log the same dataset at once on PostgreSQL: both look for its row, neither
    # finds it, and the second insert breaks the unique key. The first call here stands for that loser: the
    # winner's row goes in, then the loser's insert fails with PostgreSQL's words.
    evaluation_set = datasets.synced("eval-x", YAML, experiment_id)
    with mlflow.start_run():
        datasets.record_use(evaluation_set)  # the winner
    real, calls = mlflow.log_input, []

    def loses_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise mlflow.MlflowException(
                "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
                '"dataset_pk"'
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", loses_once)
    with mlflow.start_run() as run:
        datasets.record_use(evaluation_set)
    (used,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and used.dataset.name == "eval-x"


def test_any_other_failure_to_log_the_dataset_is_not_retried(experiment_id, monkeypatch):
    evaluation_set = datasets.synced("eval-x", YAML, experiment_id)
    calls = []

    def refuses(*args, **kwargs):
        calls.append(args)
        raise mlflow.MlflowException("RESOURCE_DOES_NOT_EXIST: run gone")

    monkeypatch.setattr(mlflow, "log_input", refuses)
    with mlflow.start_run(), pytest.raises(mlflow.MlflowException, match="run gone"):
        datasets.record_use(evaluation_set)
    assert len(calls) == 1


def test_harvested_questions_join_with_their_trace_and_outlive_a_change_of_the_yaml(experiment_id):
    from lifecycle.monitoring import Harvested

    first = datasets.synced("eval-x", YAML, experiment_id)
    found = [
        Harvested("What is MLflow?", "tr-" + "a" * 32, ("negative feedback",), "MLflow tracks ML experiments."),
        Harvested("What is a GPU?", "tr-" + "b" * 32, ("answer_relevance 0.00 < 0.2",)),
    ]
    grown = datasets.harvest(first, found)
    assert (first.version, grown.version) == ("1", "2")
    assert grown.questions[: len(YAML)] == first.questions
    assert grown.questions[len(YAML) :] == (
        datasets.Question("What is MLflow?", "MLflow tracks ML experiments."),
        datasets.Question("What is a GPU?"),
    )
    dataset, _ = stored("eval-x")
    sources = {r["inputs"]["question"]: (r["source_type"], r["source_id"]) for r in dataset.to_df().to_dict("records")}
    assert sources["What is MLflow?"] == ("TRACE", "tr-" + "a" * 32)
    assert datasets.harvest(grown, []) is grown

    again = datasets.synced("eval-x", YAML, experiment_id)  # the YAML unchanged: the harvest stays, so does the version
    assert (again.version, set(again.questions)) == ("2", set(grown.questions))
    changed = datasets.synced("eval-x", YAML[:1], experiment_id)  # the YAML's own records replaced, the harvest kept
    _, questions = stored("eval-x")
    assert changed.version == "3" and questions == ["What is MLflow?", "What is Python?", "What is a GPU?"]
    assert [q.question for q in changed.questions] == ["What is Python?", "What is MLflow?", "What is a GPU?"]
