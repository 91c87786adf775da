"""Server settings: one object, from the environment (``SERVING_*``, ``MLFLOW_MODEL_URI``) and the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from core.generation import MAX_NEW_TOKENS_CAP

ENV_PREFIX = "SERVING_"
# Where a bigger step stops paying on each device, as benchmarks/serving.py measured it: docs/serving.md, "Endpoints,
# batching and speed" (the figures live there only).
DEFAULT_MAX_BATCH_SIZE = {"cpu": 64, "cuda": 256}


class Settings(BaseModel):
    model_uri: str = Field(description="models:/name@alias, models:/name/version, runs:/id/path, or a local folder")
    host: str = "127.0.0.1"
    port: int = Field(5001, ge=1, le=65535)
    dtype: Literal["float32", "bfloat16", "int8"] | None = Field(
        None,
        description="weights and compute (int8: 8-bit weights and activations, CPU); default: the model's own "
        "(float32 unless exported in bfloat16)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    max_batch_size: int | None = Field(
        None, ge=1, le=1024, description="rows decoded together; default 64 on CPU, 256 on CUDA (measured)"
    )
    max_wait_ms: float = Field(10.0, ge=0, description="how long a partial batch waits for more requests")
    max_queue: int = Field(64, ge=1, description="queued requests beyond which new ones get 429")
    request_timeout_s: float = Field(120.0, gt=0, description="a request still waiting after this answers 504")
    max_question_chars: int = Field(2000, ge=1)
    max_input_tokens: int | None = Field(
        None, ge=1, description="prompt tokens a request may bring; default: the model's own limit (may only lower it)"
    )
    prompt_cache_mb: float = Field(
        256.0,
        ge=0,
        description="memory for the KV caches of recent prompts, so that a prompt starting like an earlier one (a "
        "question asked again, a chat sent again with one more turn) computes only what is new; 0: keep none",
    )
    max_new_tokens_cap: int = Field(MAX_NEW_TOKENS_CAP, ge=1, le=MAX_NEW_TOKENS_CAP, description="may only lower it")
    max_batch_questions: int = Field(32, ge=1, description="questions in one /ask/batch or /invocations call")
    max_chat_messages: int = Field(16, ge=1, description="messages in one /v1/chat/completions call")
    cors_origins: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    traces_url: str | None = Field(
        None, description="an MLflow tracking server (or any OTLP/HTTP collector): every answer is exported as a trace"
    )
    traces_experiment_id: str | None = Field(
        None, description="the experiment traces go to; default: the experiment of the run that logged the model"
    )
    trace_sample: float = Field(1.0, ge=0, le=1, description="the share of requests traced")
    trace_content: bool = Field(True, description="false: traces hold no question, message or answer text")
    drain_s: float = Field(
        30.0,
        gt=0,
        description="after SIGTERM: new connections are refused at once, and the requests in flight have this long "
        "to finish before the process ends",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict = {}
        if "MLFLOW_MODEL_URI" in environ:
            values["model_uri"] = environ["MLFLOW_MODEL_URI"]
        for name, field in cls.model_fields.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = [o.strip() for o in raw.split(",") if o.strip()] if field.annotation == list[str] else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def batch_size_for(self, device_type: str) -> int:
        return self.max_batch_size or DEFAULT_MAX_BATCH_SIZE.get(device_type, DEFAULT_MAX_BATCH_SIZE["cpu"])
