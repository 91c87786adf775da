"""Loading a Hugging Face model folder for generation: the model in eval mode and a tokenizer ready for batches.

``load_model(folder, chat_format, dtype, threads)`` gives a ``LoadedModel`` (dtype ``int8``: float32 weights quantized
to 8 bits once loaded, ``core.quantization``); a folder that cannot be served as asked
(a chat format its tokenizer lacks) raises ``ModelLoadError`` with what to change. Finding, downloading or converting
the folder is the lifecycle's business (``lifecycle.integrations.models``); this module only reads one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelLoadError(RuntimeError):
    """The model cannot be loaded or served as asked; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    folder: Path
    chat_format: str
    load_s: float
    reused: bool = False  # handed over from an earlier job of this process (a sweep) instead of loaded again


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Batched generation needs a pad token (GPT-2 has none: reuse EOS) and left padding."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(folder: str | Path, chat_format: str, dtype: str = "float32", threads: int | None = None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 2-second load needs no bar; conversion keeps its own
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
    if chat_format == "chat_template" and not tokenizer.chat_template:
        raise ModelLoadError(f"{folder} has no chat template; set model.chat_format=plain for a base model")
    weights = "float32" if dtype == "int8" else dtype  # int8: float32 weights quantized once loaded
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, weights))
    if dtype == "int8":
        from core.quantization import quantize_linears

        try:
            quantize_linears(model)
        except RuntimeError as exc:
            raise ModelLoadError(str(exc)) from None
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, Path(folder), chat_format, time.perf_counter() - started)
