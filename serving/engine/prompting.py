"""From a request to token ids and back: the model's prompt format, the input limits, and text out of tokens.

- ``Prompter.render`` puts a question into the model's format: its chat template, a plain prompt, or EOS-separated
  turns, through the same ``core.generation.render`` the experiment chain uses.
- ``Prompter.render_messages`` does the same for an OpenAI-style conversation. Models without a chat template get
  a plain ``Role: text`` transcript that ends with ``Assistant:``.
- ``Prompter.sequence`` encodes a prompt and checks it against ``max_input_tokens`` and the model's context window.
  It raises ``PromptTooLong`` with the numbers when the prompt does not fit.
- ``Prompter.shared_prefixes`` are the parts of the prompt every question shares (system message, chat markup): one
  for the model's question template, one for its chat template. The batch computes their KV cache once.
- ``TextStream`` turns streamed token ids into text pieces without splitting a multi-byte character.
"""

from __future__ import annotations

from typing import Any

from core.generation import render
from serving.engine.scheduler import Sequence

PREFIX_PROBES = ("What is the capital of France?", "Tell me about photosynthesis.")


class PromptTooLong(ValueError):
    """The prompt (plus the tokens to generate) does not fit the model's limits."""


def context_window(config: Any) -> int | None:
    """The most positions the model can attend to (Llama-style or GPT-2-style config), if it says."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


class Prompter:
    def __init__(self, loaded: Any, system: str | None, template: str, max_input_tokens: int) -> None:
        self.tokenizer = loaded.tokenizer
        self.chat_format = loaded.chat_format
        self.system = system
        self.template = template
        self.max_input_tokens = max_input_tokens
        self.context = context_window(loaded.model.config)

    @classmethod
    def for_spec(cls, loaded: Any, spec: Any) -> Prompter:
        """The prompter a ``serving.engine.loader.ServingSpec`` describes (system message, template, input limit)."""
        return cls(loaded, spec.system, spec.template, spec.max_input_tokens)

    def render(self, question: str, template: str | None = None) -> str:
        """The question in the model's format, with the model's template unless another is given."""
        return render(self.tokenizer, self.chat_format, self.system, template or self.template, question)

    def render_messages(self, messages: list[dict[str, str]]) -> str:
        if self.chat_format == "chat_template":
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.chat_format == "eos_turns":
            return "".join(m["content"] + self.tokenizer.eos_token for m in messages if m["role"] != "system")
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*lines, "Assistant:"])

    def shared_prefix(self) -> list[int]:
        """The token ids every question rendered with the model's own template starts with (system message, chat
        markup), less one token in case the first word of a question merges with the last prefix token."""
        return _common_prefix([self.encode(self.render(q)) for q in PREFIX_PROBES])

    def shared_prefixes(self) -> list[list[int]]:
        """The question template's shared prefix, and the chat template's (a one-message conversation, as OpenAI
        clients send): different system messages, so each gets its own."""
        chats = [self.encode(self.render_messages([{"role": "user", "content": q}])) for q in PREFIX_PROBES]
        prefixes = [self.shared_prefix(), _common_prefix(chats)]
        return [p for i, p in enumerate(prefixes) if p and p not in prefixes[:i]]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def sequence(self, prompt: str, settings: dict[str, Any]) -> Sequence:
        """A generation request for ``prompt`` with merged ``settings``, or PromptTooLong."""
        ids = self.encode(prompt)
        if len(ids) > self.max_input_tokens:
            raise PromptTooLong(
                f"the prompt has {len(ids)} tokens; this server accepts at most {self.max_input_tokens}: shorten the "
                "input (the template and system message count too)"
            )
        wanted = len(ids) + settings["max_new_tokens"]
        if self.context and wanted > self.context:
            raise PromptTooLong(
                f"the prompt has {len(ids)} tokens and max_new_tokens is {settings['max_new_tokens']}: together over "
                f"the model's context of {self.context} tokens; lower max_new_tokens or shorten the input"
            )
        return Sequence(
            prompt_ids=ids,
            max_new_tokens=settings["max_new_tokens"],
            temperature=settings["temperature"],
            top_p=settings["top_p"],
            repetition_penalty=settings["repetition_penalty"],
        )


def _common_prefix(encoded: list[list[int]]) -> list[int]:
    first, second = encoded
    common = 0
    while common < min(len(first), len(second)) and first[common] == second[common]:
        common += 1
    return first[: max(common - 1, 0)]


class TextStream:
    """Text pieces for streamed token ids: each piece is what the decoded text gained since the last one, held back
    while it ends in an incomplete character."""

    def __init__(self, prompter: Prompter) -> None:
        self.prompter = prompter
        self.ids: list[int] = []
        self.sent = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.prompter.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.sent = text[self.sent :], len(text)
        return piece
