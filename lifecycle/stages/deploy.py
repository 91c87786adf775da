"""deploy: package the model as an MLflow pyfunc, smoke-test it, register it, set the challenger alias on it.

The model folder goes through staging (hard links) into the run's artifacts as a pyfunc with a signature, an input
example, pinned pip requirements and the prompt/generation settings as ``model_config``. Only after the logged model
answers a smoke question does it become a registered version with the alias ``deploy.alias`` (challenger);
otherwise nothing is registered and the alias stays where it was. Deploying never moves the champion: mode=promote
decides that, on the evaluation set. The same holds when the upload itself fails (an S3 endpoint that went down,
credentials revoked mid-run) or the tracking server's database goes away: the error names the store and the cause,
and a re-run once it is back succeeds.
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
        from lifecycle.integrations import prompts

        cfg = self.cfg
        return {
            "model_name": cfg.model.name,
            "registered_model_name": cfg.registered_model_name,  # the pyfunc's traces name it (and its version)
            "chat_format": cfg.model.chat_format.value,
            "dtype": cfg.model.dtype.value,
            "threads": cfg.model.threads,
            "max_input_tokens": cfg.model.max_input_tokens,
            "system": cfg.prompt.system,
            "template": cfg.prompt.template,
            "prompt_name": cfg.prompt.name,
            "prompt_version": prompts.version_of(cfg.prompt),  # None when this text was never registered
            "generation": to_container(cfg.model.generation),
            "eval_questions": [q.question for q in cfg.eval.questions],  # the server's bf16 agreement check
        }

    def _cause(self, exc: Exception) -> str:
        if direct_s3(self.cfg):
            from lifecycle.integrations.storage import explain

            return explain(exc, self.cfg.storage)  # names the endpoint: unreachable, credentials, bucket...
        from lifecycle.integrations.tracking import explain

        return explain(exc, self.cfg.tracking_uri)  # a tracking server's failing database, in words

    def run(self, context: StageContext) -> StageResult:
        try:
            return self._deploy()
        except StageError:
            raise  # says what was registered, and what was not
        except Exception as exc:  # before anything was logged: the store failed on its first calls
            raise StageError(
                f"deploying failed: {self._cause(exc)}. Nothing was registered. Re-run mode=deploy once the store "
                "is back."
            ) from exc

    def _deploy(self) -> StageResult:
        from lifecycle.integrations import packaging, runs
        from lifecycle.integrations.models import resolve_model_folder

        cfg, deploy = self.cfg, self.cfg.deploy
        name, alias = cfg.registered_model_name, deploy.alias
        folder = resolve_model_folder(cfg.model, cfg.paths.model_cache)
        run_id = runs.active_run_id()
        previous = packaging.alias_version(name, alias)
        kept = f"alias {alias!r} still points to version {previous}" if previous else f"alias {alias!r} stays unset"
        destination = runs.artifact_uri()  # asked now: the store may be gone when a message needs it
        staged = packaging.stage_folder(folder, Path(cfg.paths.staging) / run_id)
        try:
            info = packaging.log_pyfunc(
                staged, deploy.artifact_name, self.model_config(), deploy.smoke.question, deploy.smoke.max_new_tokens
            )
        except Exception as exc:
            raise StageError(
                f"logging the model to {destination} failed: {self._cause(exc)}. Nothing was "
                f"registered; {kept}. Re-run mode=deploy once the store is back."
            ) from exc
        finally:
            shutil.rmtree(staged, ignore_errors=True)

        try:
            answer = packaging.smoke_check(
                info.model_uri, deploy.smoke.question, deploy.smoke.max_new_tokens, deploy.smoke.min_answer_chars
            )
        except Exception as exc:
            cause = exc if isinstance(exc, StageError) else self._cause(exc)
            raise StageError(f"{cause}. Nothing was registered; {kept}.") from exc

        try:
            version = packaging.register(
                info.model_uri, name, alias, tags={tags.RUN_ID: run_id, tags.PROMPT: cfg.prompt.name}
            )
        except packaging.LeftVersion as exc:
            raise StageError(
                f"registering {name} failed: {self._cause(exc.__cause__)}, after version {exc.version} was created, "
                f"and removing it failed too: {kept}, but version {exc.version} has no alias. Delete it once the "
                f"store is back (MlflowClient().delete_model_version({name!r}, {exc.version})), then re-run "
                "mode=deploy."
            ) from exc
        except Exception as exc:
            raise StageError(
                f"registering {name} failed: {self._cause(exc)}. Nothing was registered; {kept}. Re-run "
                "mode=deploy once it is back."
            ) from exc
        try:
            runs.set_tags({tags.MODEL_VERSION: version, tags.ALIAS: alias})
        except Exception as exc:
            raise StageError(
                f"registered {name} version {version} with alias {alias!r}, but recording that in the deploy run "
                f"failed: {self._cause(exc)}. The version is usable; its run lacks the tags."
            ) from exc
        return StageResult(
            stage=self.name,
            outputs={"model_name": name, "model_version": version, "alias": alias, "logged_model_uri": info.model_uri},
            lines=[
                f"registered {name} version {version}; alias {alias!r} -> {version}"
                + (f" (was {previous})" if previous else ""),
                f"smoke answer: {answer[:100]!r}",
            ],
        )
