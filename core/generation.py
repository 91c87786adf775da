"""Generation settings and prompt text, without any model: pure functions shared by the chain and the pyfunc.

``generation_kwargs`` turns config settings plus per-request overrides into the keyword arguments of a
transformers text-generation pipeline, and rejects bad overrides with what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OVERRIDABLE = ("max_new_tokens", "temperature", "top_p", "repetition_penalty")
MAX_NEW_TOKENS_CAP = 512  # the one cap: the pyfunc refuses more, and the server's setting may only lower it
# What a model folder that states no settings of its own gets (no serving.json, no model_config): conf/model/*.yaml
# state each model's, and deploy and export write them next to the model.
FALLBACK_GENERATION = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.1}
FALLBACK_TEMPLATE = "{{question}}"
FALLBACK_MAX_INPUT_TOKENS = 1024


def _number(name: str, value: Any, kind: type) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    if kind is int and float(value) != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return kind(value)


def merge_settings(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults with the non-None overrides applied; unknown keys and out-of-range values raise ValueError."""
    settings = {k: defaults[k] for k in OVERRIDABLE if k in defaults}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in OVERRIDABLE:
            raise ValueError(f"unknown generation parameter {key!r}; allowed: {', '.join(OVERRIDABLE)}")
        settings[key] = value
    max_new = _number("max_new_tokens", settings["max_new_tokens"], int)
    if not 1 <= max_new <= MAX_NEW_TOKENS_CAP:
        raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_CAP}, got {max_new}")
    temperature = _number("temperature", settings.get("temperature", 0.0), float)
    if not 0.0 <= temperature <= 2.0:
        raise ValueError(f"temperature must be between 0 and 2 (0 = greedy), got {temperature}")
    top_p = _number("top_p", settings.get("top_p", 1.0), float)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    penalty = _number("repetition_penalty", settings.get("repetition_penalty", 1.0), float)
    if not 0.5 <= penalty <= 2.0:
        raise ValueError(f"repetition_penalty must be between 0.5 and 2, got {penalty}")
    return {"max_new_tokens": max_new, "temperature": temperature, "top_p": top_p, "repetition_penalty": penalty}


def generation_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline kwargs: temperature 0 means greedy decoding (sampling knobs left out so none is ignored)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings["max_new_tokens"],
        "repetition_penalty": settings["repetition_penalty"],
    }
    if settings["temperature"] > 0:
        kwargs.update(do_sample=True, temperature=settings["temperature"], top_p=settings["top_p"])
    else:
        kwargs["do_sample"] = False
    return kwargs


def single_brace(template: str) -> str:
    """MLflow's ``{{var}}`` templates in LangChain's ``{var}`` format, other braces escaped."""
    escaped = template.replace("{", "{{").replace("}", "}}")
    return escaped.replace("{{{{", "{").replace("}}}}", "}")


def check_template(template: str) -> None:
    """ValueError unless ``template`` is a usable MLflow template: ``{{question}}`` in it, no other variable, and
    braces that LangChain can parse."""
    import string

    if "{{question}}" not in template:
        example = "'Answer briefly: {{question}}'"
        raise ValueError(f"the template must contain {{{{question}}}}, e.g. {example}; got {template!r}")
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(single_brace(template)) if field is not None}
    except ValueError as exc:
        raise ValueError(f"the template's braces do not parse ({exc}): {template!r}") from None
    unknown = fields - {"question"}
    if unknown:
        raise ValueError(f"the template uses {sorted(unknown)}; only {{{{question}}}} is filled in: {template!r}")


def plain_prompt(system: str | None, template: str) -> str:
    """GPT-2 style base models have no chat template: instructions, the question, then an answer cue."""
    head = f"{system.strip()}\n\n" if system else ""
    return f"{head}{template}\nAnswer:"


def eos_turns_prompt(template: str, eos_token: str) -> str:
    """DialoGPT reads a conversation as turns each ended by the EOS token; the reply follows the last one."""
    escaped_eos = eos_token.replace("{", "{{").replace("}", "}}")
    return f"{template}{escaped_eos}"


def fill(template: str, question: str) -> str:
    """An MLflow ``{{question}}`` template with the question in it."""
    return template.replace("{{question}}", question)


def render(tokenizer: Any, chat_format: str, system: str | None, template: str, question: str) -> str:
    """The exact text a model sees for a question, in the model's own format (chat template, plain or EOS turns)."""
    user = fill(template, question)
    if chat_format == "chat_template":
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if chat_format == "eos_turns":
        return f"{user}{tokenizer.eos_token}"
    return plain_prompt(system, user)
