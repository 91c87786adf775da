"""The MLflow pyfunc model the deploy stage logs (MLflow "models from code": this file is the model's code).

Contract:
- ``load_context`` loads the Hugging Face folder logged as artifact ``model_dir`` and builds the chain once, from
  ``model_config`` (prompt, chat format, dtype, generation defaults) saved with the model.
- ``predict(model_input, params)`` accepts a DataFrame with a ``question`` column, a dict (``question`` or
  ``questions``), a list of strings or dicts, or a plain string, and returns one answer string per question.
  ``params`` may override max_new_tokens, temperature, top_p and repetition_penalty for the call.

Each prediction is one trace that reads as a person expects (``mlflow models serve``, ``mode=test``,
``mode=promote``...): the question (or questions) as its inputs and the answers as its outputs, one child span per
question when several come at once, the generation settings and token counts, and the registered model's name,
version and aliases and the prompt's name and version as trace tags, under the names the server's traces use
(``core.telemetry``), so a reader and ``mode=monitor`` can treat both alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import PythonModel
from mlflow.tracing.constant import SpanAttributeKey

from core import telemetry as names
from core.generation import OVERRIDABLE
from core.model_input import extract_questions

log = logging.getLogger(__name__)


class LifecycleChatModel(PythonModel):
    def load_context(self, context) -> None:
        from core.model_folder import load_model
        from lifecycle.integrations.chains import ChainRuntime, PromptSpec

        config = context.model_config
        loaded = load_model(context.artifacts["model_dir"], config["chat_format"], config["dtype"], config["threads"])
        prompt = PromptSpec(template=config["template"], system=config.get("system"))
        self.runtime = ChainRuntime(loaded, prompt, config["generation"])
        self.trace_tags = registered_tags(Path(context.artifacts["model_dir"]), config)

    def predict(self, context, model_input, params=None) -> list[str]:
        questions = extract_questions(model_input)
        overrides = {k: v for k, v in (params or {}).items() if k in OVERRIDABLE}
        with mlflow.start_span(name="predict", span_type=SpanType.CHAIN) as span:
            span.set_inputs({"question": questions[0]} if len(questions) == 1 else {"questions": questions})
            span.set_attributes(names.generation_attributes(self.runtime.settings(overrides)))
            if mlflow.get_current_active_span() is not None:  # tracing is off (the deploy's smoke check): no trace
                mlflow.update_current_trace(tags=self.trace_tags)
            started = time.time_ns()
            answers = self.runtime.answer_batch(questions, overrides)
            ended = time.time_ns()
            prompts = [self.runtime.count_tokens(self.runtime.render(q)) for q in questions]
            _usage(span, sum(prompts), sum(a.tokens for a in answers))
            if len(answers) > 1:
                for index, (answer, prompt_tokens) in enumerate(zip(answers, prompts, strict=True)):
                    child = mlflow.start_span_no_context(
                        f"answer {index}", SpanType.LLM, parent_span=span, inputs={"question": answer.question},
                        start_time_ns=started,
                    )  # fmt: skip
                    _usage(child, prompt_tokens, answer.tokens)
                    child.set_outputs(answer.text)
                    child.end(end_time_ns=ended)
            texts = [answer.text for answer in answers]
            span.set_outputs(texts[0] if len(texts) == 1 else texts)
        return texts


def _usage(span, prompt_tokens: int, completion_tokens: int) -> None:
    span.set_attribute(names.INPUT_TOKENS, prompt_tokens)
    span.set_attribute(names.OUTPUT_TOKENS, completion_tokens)
    usage = {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    span.set_attribute(SpanAttributeKey.CHAT_USAGE, {**usage, "total_tokens": prompt_tokens + completion_tokens})


def registered_tags(model_dir: Path, config: dict) -> dict[str, str]:
    """The trace tags of this model's predictions: the registered model's name, the version registered from this
    model's run and its aliases (looked up once, where the registry answers), the prompt's name and version."""
    tags = {
        names.MODEL_NAME: config.get("registered_model_name"),
        names.PROMPT_NAME: config.get("prompt_name"),
        names.PROMPT_VERSION: config.get("prompt_version"),
    }
    try:
        version = _registered_version(model_dir, config.get("registered_model_name"))
    except Exception as exc:  # a registry that does not answer costs the tags, never the model
        log.debug("registered version not found: %s", exc)
        version = None
    if version is not None:
        tags[names.MODEL_VERSION] = version.version
        tags[names.MODEL_ALIAS] = ",".join(sorted(version.aliases)) or None
    return {key: str(value) for key, value in tags.items() if value is not None}


def _registered_version(model_dir: Path, name: str | None):
    """The model version registered from the run that logged this model (its MLmodel, beside the artifacts)."""
    import yaml

    if not name:
        return None
    mlmodel = next((p / "MLmodel" for p in model_dir.parents if (p / "MLmodel").exists()), None)
    run_id = yaml.safe_load(mlmodel.read_text()).get("run_id") if mlmodel else None
    if not run_id:
        return None
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    newest = max(versions, key=lambda v: int(v.version), default=None)
    return newest and client.get_model_version(name, newest.version)  # a search leaves the aliases out


mlflow.models.set_model(LifecycleChatModel())
