"""deploy: package the model as an MLflow pyfunc, smoke-test it, register it, move the alias.

The model folder goes through staging (hard links) into the run's artifacts as a pyfunc with a signature, an input
example, pinned pip requirements and the prompt/generation settings as ``model_config``. Only after the logged model
answers a smoke question does it become a registered version with the alias; otherwise nothing is registered and the
alias stays where it was. The same holds when the upload itself fails (an S3 endpoint that went down, credentials
revoked mid-run): the error names the store and the cause, and a re-run once it is back succeeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lifecycle import tags
from lifecycle.config import to_container
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import locate
from lifecycle.stores import direct_s3


class DeployStage(Stage):
    name = "deploy"

    def preflight(self) -> None:
        locate(self.cfg)

    def model_config(self) -> dict:
        cfg = self.cfg
        return {
            "model_name": cfg.model.name,
            "chat_format": cfg.model.chat_format.value,
            "dtype": cfg.model.dtype.value,
            "threads": cfg.model.threads,
            "max_input_tokens": cfg.model.max_input_tokens,
            "system": cfg.prompt.system,
            "template": cfg.prompt.template,
            "prompt_name": cfg.prompt.name,
            "generation": to_container(cfg.model.generation),
            "eval_questions": [q.question for q in cfg.eval.questions],  # the server's bf16 agreement check
        }

    def _cause(self, exc: Exception) -> str:
        if direct_s3(self.cfg):
            from lifecycle.integrations.storage import explain

            return explain(exc, self.cfg.storage)  # names the endpoint: unreachable, credentials, bucket...
        return f"{type(exc).__name__}: {exc}"

    def run(self, context: StageContext) -> StageResult:
        from lifecycle.integrations import packaging, runs
        from lifecycle.integrations.models import resolve_model_folder

        cfg, deploy = self.cfg, self.cfg.deploy
        name, alias = cfg.registered_model_name, deploy.alias
        folder = resolve_model_folder(cfg.model, cfg.paths.model_cache)
        run_id = runs.active_run_id()
        previous = packaging.alias_version(name, alias)
        kept = f"alias {alias!r} still points to version {previous}" if previous else f"alias {alias!r} stays unset"
        staged = packaging.stage_folder(folder, Path(cfg.paths.staging) / run_id)
        try:
            info = packaging.log_pyfunc(staged, deploy.artifact_name, self.model_config(), deploy.smoke.question)
        except Exception as exc:
            raise StageError(
                f"logging the model to {runs.artifact_uri()} failed: {self._cause(exc)}. Nothing was "
                f"registered; {kept}. Re-run mode=deploy once the artifact store is back."
            ) from exc
        finally:
            shutil.rmtree(staged, ignore_errors=True)

        try:
            answer = packaging.smoke_check(
                info.model_uri, deploy.smoke.question, deploy.smoke.max_new_tokens, deploy.smoke.min_answer_chars
            )
        except StageError as exc:
            raise StageError(f"{exc}. Nothing was registered; {kept}.") from exc

        version = packaging.register(
            info.model_uri, name, alias, tags={tags.RUN_ID: run_id, tags.PROMPT: cfg.prompt.name}
        )
        runs.set_tags({tags.MODEL_VERSION: version, tags.ALIAS: alias})
        return StageResult(
            stage=self.name,
            outputs={"model_name": name, "model_version": version, "alias": alias, "logged_model_uri": info.model_uri},
            lines=[
                f"registered {name} version {version}; alias {alias!r} -> {version}"
                + (f" (was {previous})" if previous else ""),
                f"smoke answer: {answer[:100]!r}",
            ],
        )
