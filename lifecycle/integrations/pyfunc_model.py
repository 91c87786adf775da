"""The MLflow pyfunc model the deploy stage logs (MLflow "models from code": this file is the model's code).

Contract:
- ``load_context`` loads the Hugging Face folder logged as artifact ``model_dir`` and builds the chain once, from
  ``model_config`` (prompt, chat format, dtype, generation defaults) saved with the model.
- ``predict(model_input, params)`` accepts a DataFrame with a ``question`` column, a dict (``question`` or
  ``questions``), a list of strings or dicts, or a plain string, and returns one answer string per question.
  ``params`` may override max_new_tokens, temperature, top_p and repetition_penalty for the call.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

from core.generation import OVERRIDABLE
from core.model_input import extract_questions


class LifecycleChatModel(PythonModel):
    def load_context(self, context) -> None:
        from core.model_folder import load_model
        from lifecycle.integrations.chains import ChainRuntime, PromptSpec

        config = context.model_config
        loaded = load_model(context.artifacts["model_dir"], config["chat_format"], config["dtype"], config["threads"])
        prompt = PromptSpec(template=config["template"], system=config.get("system"))
        self.runtime = ChainRuntime(loaded, prompt, config["generation"])

    @mlflow.trace(name="predict", span_type="CHAIN")
    def predict(self, context, model_input, params=None) -> list[str]:
        questions = extract_questions(model_input)
        overrides = {k: v for k, v in (params or {}).items() if k in OVERRIDABLE}
        return [answer.text for answer in self.runtime.answer_batch(questions, overrides)]


mlflow.models.set_model(LifecycleChatModel())
