"""MLflow's LLM judges through any OpenAI-compatible endpoint: a hosted one, vLLM, llama.cpp's server, or this
project's own ``python -m serving`` (whose ``response_format`` keeps even a small model's verdicts parseable).

``experiment.judge`` names the model on the endpoint, the endpoint's base URL and the environment variable that
holds its key; the key itself is never in the config. MLflow's ``openai:/<model>`` judges read the endpoint and key
from ``OPENAI_API_BASE`` and ``OPENAI_API_KEY``: ``environment()`` sets them only while the judges run, and restores
what was there. The judges are Correctness (against the expected answer), RelevanceToQuery, and one Guidelines judge
per entry of ``eval.guidelines``; their rationales land in the evaluation's traces, their scores in the run.

MLflow retries a judge call ten times over about three minutes when its endpoint is down, per judge and answer, so
``check()`` asks the endpoint first (a few seconds) and a stage refuses to start without one.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

from lifecycle.redact import redact_text
from lifecycle.stage import StageError

OPENAI_BASE_URL = "https://api.openai.com/v1"
PROBE_TIMEOUT_S = 5
NO_KEY = "not-needed"  # MLflow's OpenAI judges refuse to start without some key


def enabled(judge) -> bool:
    return bool(judge and judge.model)


def endpoint(judge) -> str:
    return (judge.base_url or os.environ.get("OPENAI_API_BASE") or OPENAI_BASE_URL).rstrip("/")


def describe(judge) -> dict[str, str]:
    """What a run records about its judge: the model and the endpoint (never the key)."""
    return {"judge_model": judge.model, "judge_endpoint": redact_text(endpoint(judge))}


def _key(judge) -> str:
    if judge.key_env is None:
        return NO_KEY
    key = os.environ.get(judge.key_env)
    if not key:
        raise StageError(
            f"experiment.judge.model={judge.model} needs a key in the environment variable {judge.key_env}, which "
            f"is not set: export {judge.key_env}=... (or set experiment.judge.key_env=null for an endpoint that "
            "needs none, or another variable's name)."
        )
    return key


def check(judge) -> None:
    """The key is there and the endpoint answers HTTP (any status: it is up), or a StageError that says which."""
    _key(judge)
    url = endpoint(judge)
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered: up, whatever it thinks of an unauthenticated /models
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StageError(
            f"the judge endpoint {redact_text(url)} cannot be reached ({reason}). Start it, or point "
            "experiment.judge.base_url at one that runs (e.g. `python -m serving --model-uri ...` serves "
            "http://127.0.0.1:8000/v1), or set experiment.judge.model=null to score without judges."
        ) from None


@contextlib.contextmanager
def environment(judge) -> Iterator[None]:
    """``OPENAI_API_BASE`` and ``OPENAI_API_KEY`` as MLflow's judges read them, for as long as they run."""
    wanted = {"OPENAI_API_BASE": endpoint(judge), "OPENAI_API_KEY": _key(judge)}
    wanted.setdefault("MLFLOW_MODEL_CATALOG_URI", os.environ.get("MLFLOW_MODEL_CATALOG_URI", ""))  # no 7 s lookup
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unreferenced_scorers(judge, guidelines: Mapping[str, str]) -> list:
    """The judges that need no expected answer (RelevanceToQuery and the guidelines): what judges served traffic."""
    from mlflow.genai.scorers import Guidelines, RelevanceToQuery

    model = f"openai:/{judge.model}"
    return [
        RelevanceToQuery(model=model),
        *(Guidelines(name=name, guidelines=text, model=model) for name, text in guidelines.items()),
    ]


def verdicts(judge, guidelines: Mapping[str, str], pairs) -> list[dict[str, tuple[float | None, str | None]]]:
    """Each (question, answer)'s verdicts from the judges that need no expected answer: per judge, its value (yes
    as 1, no as 0; None where it gave none) and its rationale."""
    from lifecycle import console, scoring

    chosen = unreferenced_scorers(judge, guidelines)
    out = []
    with console.library_output_hidden(), environment(judge):
        for question, answer in pairs:
            given = {}
            for judged_by in chosen:
                feedback = judged_by(inputs={"question": question}, outputs=answer)
                given[judged_by.name] = (scoring.as_number(feedback.value), feedback.rationale)
            out.append(given)
    return out


def scorers(judge, guidelines: Mapping[str, str]) -> list:
    """The judges, as mlflow.genai scorers, all asking ``openai:/<judge.model>``."""
    from mlflow.genai.scorers import Correctness

    return [Correctness(model=f"openai:/{judge.model}"), *unreferenced_scorers(judge, guidelines)]
