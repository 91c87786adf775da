"""experiment: load the model, register prompts, build the chain, answer and score the evaluation questions.

Each phase is a trace whose root span is named after it (load_model, register_prompts, build_chain,
answer_questions, evaluate). The questions are answered in one batched generation. Each gets its own nested run
with its answer as an artifact, its tokens, and its share of the batch's time (latency_s, tokens_per_s).
``mlflow.genai.evaluate`` then scores all answers in the stage's run.
"""

from __future__ import annotations

import statistics

from lifecycle import tags
from lifecycle.stage import Stage, StageContext, StageError, StageResult
from lifecycle.stages.common import check_judge, evaluation_set, loaded_model, locate, record_judge


class ExperimentStage(Stage):
    name = "experiment"

    def preflight(self) -> None:
        from core.generation import check_template

        try:
            check_template(self.cfg.prompt.template)
        except ValueError as exc:
            raise StageError(f"prompt {self.cfg.prompt.name!r}: {exc}") from None
        locate(self.cfg)
        check_judge(self.cfg)

    def run(self, context: StageContext) -> StageResult:
        from lifecycle.config_groups import group_options
        from lifecycle.integrations import evaluation, prompts, runs
        from lifecycle.integrations.chains import ChainRuntime, PromptSpec

        cfg, settings = self.cfg, self.cfg.experiment
        with runs.span("load_model") as span:
            loaded = loaded_model(context)
            span.set_attributes({"folder": str(loaded.folder), "load_s": loaded.load_s, "reused": loaded.reused})

        with runs.span("register_prompts") as span:
            catalog = list(group_options(cfg, "prompt").values()) if settings.register_all_prompts else []
            registered = prompts.register_all(catalog, cfg.prompt, settings.prompt_alias)
            used = registered[cfg.prompt.name]
            span.set_outputs({name: p.uri for name, p in registered.items()})

        with runs.span("build_chain") as span:
            runtime = ChainRuntime(loaded, PromptSpec(cfg.prompt.template, cfg.prompt.system), cfg.model.generation)
            span.set_attributes({"chat_format": loaded.chat_format, "prompt": used.uri})

        runs.log_params({"prompt_uri": used.uri, "model_folder": str(loaded.folder), "chat_format": loaded.chat_format})
        record_judge(cfg)
        runs.set_tags({tags.MODEL_REUSED: str(loaded.reused).lower()})
        with runs.span("answer_questions") as span:
            questions = evaluation_set(context).questions
            answers = self._answer_all(runtime, questions, settings.progress_bar, used.uri)
            span.set_outputs({a.question: a.text for a in answers})

        with runs.span("evaluate") as span:
            texts = [a.text for a in answers]
            limit = cfg.eval.thresholds.max_answer_chars
            scores = evaluation.evaluate(texts, questions, limit, settings.judge, cfg.eval.guidelines).metrics
            span.set_outputs(scores)

        latencies = [a.latency_s for a in answers]
        metrics = {
            "model_load_s": loaded.load_s,
            "latency_mean_s": statistics.fmean(latencies),  # per answer: the batch's time over its answers
            "generation_s": sum(latencies),
            "tokens_generated_total": float(sum(a.tokens for a in answers)),
            "tokens_per_s": sum(a.tokens for a in answers) / max(sum(latencies), 1e-9),
        }
        shown = ", ".join(f"{k}={v:.2f}" for k, v in sorted(scores.items()) if k.endswith("/mean"))
        return StageResult(
            stage=self.name,
            metrics=metrics,
            outputs={"prompt_uri": used.uri, "scores": scores, "model_folder": str(loaded.folder)},
            lines=[
                f"model {cfg.model.name} ({loaded.folder}), prompt {used.uri}",
                f"{len(answers)} questions, {metrics['tokens_per_s']:.1f} tokens/s; scores: {shown}",
            ],
        )

    @staticmethod
    def _answer_all(runtime, questions, progress: bool, prompt_uri: str) -> list:
        """All questions in one batched generation (greedy answers are the ones each would get alone, about four
        times faster), then one nested run per question with its answer, tokens and share of the batch's time."""
        from tqdm.auto import tqdm

        from lifecycle.integrations import runs

        with runs.span("generate_batch") as span:
            span.set_inputs({"questions": len(questions)})
            answers = runtime.answer_batch([item.question for item in questions])
        for index, (item, answer) in enumerate(
            tqdm(list(zip(questions, answers, strict=True)), desc="questions", unit="q", disable=not progress)
        ):
            with runs.nested_run(f"question-{index + 1:02d}"):
                runs.log_params({"question": item.question[:500], "prompt_uri": prompt_uri})
                runs.log_metrics(
                    {
                        "latency_s": answer.latency_s,  # this answer's share of the batch's generation time
                        "tokens_generated": answer.tokens,
                        "tokens_per_s": answer.tokens_per_s,
                    }
                )
                runs.log_text(answer.text, "answer.txt")
                runs.log_dict(
                    {"question": item.question, "answer": answer.text, "expected_facts": list(item.expected_facts)},
                    "qa.json",
                )
        return answers
