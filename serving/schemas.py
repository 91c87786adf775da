"""Request and response bodies (pydantic); Swagger at /docs shows and tries them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(None, ge=1, description="cap on generated tokens (server default if unset)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy (deterministic)")
    prompt_template: str | None = Field(
        None,
        max_length=4000,
        description="an MLflow-style template containing {{question}}, used instead of the model's for this request",
        examples=["Answer in one word: {{question}}"],
    )


class AskRequest(AskOptions):
    question: str = Field(min_length=1, examples=["What is the capital of France?"])


class BatchRequest(AskOptions):
    questions: list[str] = Field(min_length=1, examples=[["What is Python?", "How many days are in a week?"]])


class AskResponse(BaseModel):
    question: str
    answer: str
    tokens: int = Field(description="tokens generated")
    latency_s: float
    model_version: str | None


class BatchResponse(BaseModel):
    answers: list[AskResponse]


class Predictions(BaseModel):
    predictions: list[str]


class Health(BaseModel):
    status: str
    ready: bool
    detail: str | None = None


class ModelInfo(BaseModel):
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    source_uri: str
    folder: str
    chat_format: str
    dtype: str
    device: str
    acceleration: list[str] = Field(description="what makes a decoding step fast on this device")
    dtype_agreement: dict[str, Any] | None = Field(
        None, description="bfloat16 only: greedy answers to the evaluation questions against float32"
    )
    parameters: int
    generation_defaults: dict[str, Any]
    batching: dict[str, Any]
    stats: dict[str, Any]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (n, user, ...): accepted

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
