"""The LangChain runnable around a loaded model: prompt | Hugging Face pipeline model | string parser.

Chat-template aware: instruct models get ``ChatPromptTemplate | ChatHuggingFace`` (the tokenizer's own template);
GPT-2 style models a plain prompt; DialoGPT turns ended by EOS. ``answer`` runs one question through the chain;
``answer_batch`` renders the same prompts and runs them as one left-padded batch through the same pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline

from core.generation import (
    eos_turns_prompt,
    generation_kwargs,
    merge_settings,
    plain_prompt,
    render,
    single_brace,
)
from core.model_folder import LoadedModel

BATCH_SIZE = 8


@dataclass(frozen=True)
class PromptSpec:
    template: str  # MLflow double-brace format, with {{question}}
    system: str | None = None


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    tokens: int
    latency_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.latency_s if self.latency_s > 0 else 0.0


class ChainRuntime:
    def __init__(self, loaded: LoadedModel, prompt: PromptSpec, defaults: Mapping[str, Any]) -> None:
        from transformers import pipeline

        self.loaded = loaded
        self.spec = prompt
        self.defaults = dict(defaults)
        tokenizer = loaded.tokenizer
        pipe = pipeline(
            "text-generation",
            model=loaded.model,
            tokenizer=tokenizer,
            return_full_text=False,
            batch_size=BATCH_SIZE,
        )
        self.llm = HuggingFacePipeline(pipeline=pipe, batch_size=BATCH_SIZE)
        template = single_brace(prompt.template)
        if loaded.chat_format == "chat_template":
            messages = [("system", prompt.system)] if prompt.system else []
            self.prompt = ChatPromptTemplate.from_messages([*messages, ("human", template)])
            self.model = ChatHuggingFace(llm=self.llm, tokenizer=tokenizer)
        elif loaded.chat_format == "eos_turns":
            self.prompt = PromptTemplate.from_template(eos_turns_prompt(template, tokenizer.eos_token))
            self.model = self.llm
        else:
            self.prompt = PromptTemplate.from_template(plain_prompt(prompt.system, template))
            self.model = self.llm

    def settings(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return merge_settings(self.defaults, overrides)

    def chain(self, overrides: Mapping[str, Any] | None = None):
        kwargs = generation_kwargs(self.settings(overrides))
        return self.prompt | self.model.bind(pipeline_kwargs=kwargs) | StrOutputParser()

    def render(self, question: str) -> str:
        """The exact text the model sees for a question (the same text the chain's prompt produces)."""
        loaded, spec = self.loaded, self.spec
        return render(loaded.tokenizer, loaded.chat_format, spec.system, spec.template, question)

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer.encode(text, add_special_tokens=False))

    def answer(self, question: str, overrides: Mapping[str, Any] | None = None) -> Answer:
        started = time.perf_counter()
        text = self.chain(overrides).invoke({"question": question}).strip()
        return Answer(question, text, self.count_tokens(text), time.perf_counter() - started)

    def answer_batch(self, questions: Sequence[str], overrides: Mapping[str, Any] | None = None) -> list[Answer]:
        kwargs = generation_kwargs(self.settings(overrides))
        started = time.perf_counter()
        texts = self.llm.bind(pipeline_kwargs=kwargs).batch([self.render(q) for q in questions])
        elapsed = (time.perf_counter() - started) / max(len(questions), 1)
        texts = [t.strip() for t in texts]
        return [Answer(q, t, self.count_tokens(t), elapsed) for q, t in zip(questions, texts, strict=True)]
