"""Request and response bodies (pydantic): the exact contract that /openapi.json publishes and the server enforces.

Requests are strict: a wrong type is refused, never coerced (``"0.5"`` is not a number, ``1`` is not a boolean).
Every limit the server enforces on a body is in its schema, read from the server's settings
(``request_models(settings)``): the question's length, the max_new_tokens cap, the batch size, the template's form.
What a schema cannot say, the operation's description does (``token_limit_text``, filled in by ``serving.http.docs``
once the model has loaded): a prompt over the token limit is refused with 400 ``context_length_exceeded``. Every error
has one body shape, ``ErrorBody``: FastAPI's validation-error shape, a list of ``{loc, msg, type}``, where ``type`` is a
stable code a client can act on.
"""

# no `from __future__ import annotations`: the request models are built in a function, from its local types

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from core import telemetry
from serving.http.settings import Settings

if TYPE_CHECKING:
    from serving.engine import Sequence

STRICT = ConfigDict(extra="forbid", strict=True)
# a character other than ASCII whitespace: the same test in JSON Schema's, Python's and Rust's regex engines
QUESTION_PATTERN = r"[^ \t\n\r\f\v]"
# {{question}} at least once and no other braces: what core.generation.check_template accepts, as a pattern
TEMPLATE_PATTERN = r"^[^{}]*\{\{question\}\}[^{}]*(\{\{question\}\}[^{}]*)*$"


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 5.0 is one (and stays refused as a boolean or a string)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)


# --- structured output (/v1/chat/completions response_format, as OpenAI's API spells it) ---


class TextFormat(BaseModel):
    model_config = STRICT

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """Any JSON object."""

    model_config = STRICT

    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(None, max_length=2000)
    schema_: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        alias="schema",
        description="a JSON Schema the answer is held to while it is generated; 400 when it cannot be enforced",
        examples=[{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}],
    )
    strict: bool | None = None  # always enforced here


class JsonSchemaFormat(BaseModel):
    """An answer that validates against ``json_schema.schema``."""

    model_config = STRICT

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


# --- errors ---


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="where: ['body', 'question'], or ['request'] for the request as a whole")
    msg: str = Field(description="what is wrong and what is allowed")
    type: str = Field(description="a stable code: missing, string_too_long, busy, timeout, not_ready, ...")


class ErrorBody(BaseModel):
    """Every 4xx answer (and 503/504): FastAPI's validation-error shape."""

    detail: list[ErrorItem]


PROMPT_TOO_LONG = (
    "type context_length_exceeded: the prompt is over the token limit stated in this operation's description; "
    "shorten it (or lower max_new_tokens)"
)
INVALID_BODY = (
    "type invalid_body: the body is not JSON at all (undecodable bytes); or, on /invocations, a text/csv body that "
    "is not one column `question` of questions within the limits (detail says what, as for the JSON it is read as)"
)
UNENFORCEABLE = "type unenforceable_schema: response_format holds a JSON schema the server cannot enforce, and why"
ERROR_DESCRIPTIONS = {
    400: f"{PROMPT_TOO_LONG}; or {INVALID_BODY}",
    401: "the server has an API key and the request lacks it (Authorization: Bearer <key> or X-API-Key)",
    415: "the body is not application/json (nor text/csv, on /invocations)",
    422: "the body breaks the schema: detail says where and what is allowed",
    429: "the queue is full: retry after Retry-After seconds",
    500: "type generation_failed: this answer's decoding failed (its scores went non-finite); other requests are not "
    "affected, and a retry may succeed",
    503: "the model is not loaded yet (or failed to load), or type stopping: the server stopped before this answer "
    "was finished; retry after Retry-After seconds",
    504: "no answer within the server's request timeout",
    404: "type trace_not_found: the tracking server has no trace with this id",
}
CHAT_DESCRIPTIONS = {400: f"{PROMPT_TOO_LONG}; or {UNENFORCEABLE}; or {INVALID_BODY}"}


def errors(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an operation that may answer these error codes, each with ``ErrorBody``; ``described``
    replaces the usual description of some."""
    texts = {**ERROR_DESCRIPTIONS, **(described or {})}
    return {code: {"model": ErrorBody, "description": texts[code]} for code in codes}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``errors`` for an operation whose own answer is not JSON (a stream): FastAPI would file ``model`` under the
    operation's media type, so the JSON body is named by reference (``ErrorBody`` is in every app's components)."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {code: {"content": body, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


GENERATING = (400, 401, 422, 429, 500, 503, 504)
GENERATION_ERRORS = errors(*GENERATING)
CHAT_ERRORS = errors(*GENERATING, described=CHAT_DESCRIPTIONS)
# the operations whose body becomes a prompt: their descriptions state the token limit (serving.http.docs)
PROMPTED = ("/ask", "/ask/batch", "/ask/stream", "/invocations", "/v1/chat/completions")


def token_limit_text(max_input_tokens: int | None, context: int | None, cap: int) -> str:
    """What an operation's description says of the token limit: the numbers once the model has loaded."""
    if max_input_tokens is None:
        return (
            "**Token limit.** The prompt may have at most the model's token limit, stated here once the model has "
            "loaded (and in /model/info); over it, the answer is 400 with type context_length_exceeded."
        )
    window = f" and, with max_new_tokens, the model's context of {context} tokens" if context else ""
    return (
        f"**Token limit.** The prompt may have at most **{max_input_tokens} tokens**{window}: the question in the "
        "model's template with its system message (for a chat, every message in the chat template). Over it, the "
        "answer is 400 with type context_length_exceeded and the prompt's count. Characters are not tokens: a word "
        f"is about one token, a digit or a character of a non-Latin script one or more. max_new_tokens is at most "
        f"{cap}."
    )


# --- feedback (/v1/feedback, with traces on) ---

TRACE_ID_PATTERN = r"^tr-[0-9a-f]{32}$"
FEEDBACK_DESCRIPTIONS = {
    503: "the model is not loaded yet, or type tracking_unavailable: the tracking server could not record it (why "
    "is in msg); retry after Retry-After seconds",
}


class FeedbackRequest(BaseModel):
    """Feedback on one answer: recorded as an assessment on its trace (a corrected answer as an expectation)."""

    model_config = STRICT

    trace_id: str = Field(
        pattern=TRACE_ID_PATTERN, description="the answer's trace: its X-Trace-Id header", examples=["tr-" + "0" * 32]
    )
    value: bool | float | Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="yes/no (true/false), a number, or a label", examples=[True]
    )
    name: str = Field(telemetry.FEEDBACK, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the assessment's name")
    rationale: str | None = Field(None, max_length=2000, description="why")
    corrected_answer: str | None = Field(
        None, min_length=1, max_length=4000, description="the answer it should have been: an expectation"
    )
    source: str = Field("anonymous", min_length=1, max_length=100, description="who gave it (a user id)")


class FeedbackRecorded(BaseModel):
    trace_id: str
    assessment_ids: list[str] = Field(description="the feedback's, then the corrected answer's")


# --- responses ---


class AskResponse(BaseModel):
    question: str
    answer: str
    tokens: int = Field(description="tokens generated")
    latency_s: float
    model_version: str | None
    trace_id: str | None = Field(None, description="the answer's trace (X-Trace-Id), when the server records traces")


class BatchResponse(BaseModel):
    answers: list[AskResponse]


class Predictions(BaseModel):
    predictions: list[str]


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
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
        None, description="bfloat16 and int8 only: greedy answers to the evaluation questions against float32"
    )
    parameters: int
    generation_defaults: dict[str, Any]
    limits: dict[str, int | None] = Field(
        description="max_input_tokens (prompt tokens a request may bring), context_window (the model's positions), "
        "max_new_tokens_cap"
    )
    batching: dict[str, Any]
    stats: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(
        description="prompt tokens whose keys and values came from the server's prompt cache (not computed again)"
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails

    @classmethod
    def of(cls, seq: "Sequence") -> "Usage":
        """The usage of a finished request: its prompt and answer tokens, and the prompt tokens read from the cache."""
        prompt_tokens, completion_tokens = len(seq.prompt_ids), len(seq.tokens)
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=seq.cached_tokens),
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # options we do not implement are accepted, as in OpenAI's

    include_usage: bool = Field(
        False, description="true: a last chunk before [DONE] holds the usage (its choices empty), as OpenAI sends it"
    )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


# server-sent events, each described as the event it is: a "data:" line holding a JSON object (or [DONE])
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "string", "description": "a JSON object, or [DONE] at the end of a chat"}},
        }
    }
}


# --- requests: built from the settings, so the document says what this server enforces ---


@dataclass(frozen=True)
class RequestModels:
    ask: type[BaseModel]
    batch: type[BaseModel]
    chat: type[BaseModel]
    invocation: type[RootModel]


def request_models(settings: Settings) -> RequestModels:
    cap, batch = settings.max_new_tokens_cap, settings.max_batch_questions
    Question = Annotated[
        str,
        Field(
            min_length=1,
            max_length=settings.max_question_chars,
            pattern=QUESTION_PATTERN,
            description=f"at most {settings.max_question_chars} characters, not only whitespace",
            examples=["What is the capital of France?"],
        ),
    ]
    TokenCount = Annotated[int, Field(ge=1, le=cap), INTEGRAL]  # the bounds on the int, then 5.0 -> 5 before it
    MaxNewTokens = Annotated[TokenCount | None, Field(None, description=f"1 to {cap}; server default if unset")]
    Temperature = Annotated[float | None, Field(None, ge=0, le=2, description="0 = greedy (deterministic)")]
    TopP = Annotated[float | None, Field(None, gt=0, le=1)]

    class AskOptions(BaseModel):
        model_config = STRICT

        max_new_tokens: MaxNewTokens
        temperature: Temperature
        prompt_template: str | None = Field(
            None,
            max_length=settings.max_question_chars,
            pattern=TEMPLATE_PATTERN,
            description="an MLflow-style template: {{question}} (at least once) and no other braces; used instead of "
            "the model's for this request",
            examples=["Answer in one word: {{question}}"],
        )

    class AskRequest(AskOptions):
        question: Question

    class BatchRequest(AskOptions):
        questions: list[Question] = Field(
            min_length=1, max_length=batch, examples=[["What is Python?", "How many days are in a week?"]]
        )

    class ChatMessage(BaseModel):
        model_config = STRICT

        role: Literal["system", "user", "assistant"]
        content: str = Field(max_length=settings.max_question_chars)

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True)  # fields we do not use (n, user, ...) are accepted

        model: str | None = None
        messages: list[ChatMessage] = Field(min_length=1, max_length=settings.max_chat_messages)
        max_tokens: MaxNewTokens
        max_completion_tokens: MaxNewTokens
        temperature: Temperature
        top_p: TopP
        stream: bool = False
        stream_options: StreamOptions | None = None
        response_format: ResponseFormat | None = None
        cache_salt: str | None = Field(
            None,
            min_length=1,
            max_length=256,
            description="as in vLLM: this request reuses, and leaves for later, only cached prompts of requests with "
            "the same salt, so that no one can tell from response times what others asked. Use a secret, random "
            "value per user or tenant (for example 43 characters of base64, 256 bits)",
        )

    class Params(BaseModel):
        model_config = STRICT

        max_new_tokens: MaxNewTokens
        temperature: Temperature
        top_p: TopP
        repetition_penalty: float | None = Field(None, ge=0.5, le=2)

    class QuestionRecord(BaseModel):
        model_config = STRICT

        question: Question

    class QuestionList(BaseModel):
        model_config = STRICT

        questions: list[Question] = Field(min_length=1, max_length=batch)

    class DataframeSplit(BaseModel):
        model_config = STRICT

        columns: list[Literal["question"]] = Field(min_length=1, max_length=1)
        data: list[Annotated[list[Question], Field(min_length=1, max_length=1)]] = Field(min_length=1, max_length=batch)
        index: list[int] | None = None

    class SplitInput(BaseModel):
        model_config = STRICT

        dataframe_split: DataframeSplit
        params: Params | None = None

    class RecordsInput(BaseModel):
        model_config = STRICT

        dataframe_records: list[QuestionRecord] = Field(min_length=1, max_length=batch)
        params: Params | None = None

    class InstancesInput(BaseModel):
        model_config = STRICT

        instances: list[Question | QuestionRecord] = Field(min_length=1, max_length=batch)
        params: Params | None = None

    class InputsInput(BaseModel):
        model_config = STRICT

        inputs: (
            Question | Annotated[list[Question | QuestionRecord], Field(min_length=1, max_length=batch)]
            | QuestionRecord | QuestionList
        )  # fmt: skip
        params: Params | None = None

    class InvocationRequest(RootModel):
        """MLflow's scoring protocol: exactly one of dataframe_split, dataframe_records, instances or inputs, with
        optional params. The question column is ``question``."""

        root: SplitInput | RecordsInput | InstancesInput | InputsInput

        model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(oneOf=schema.pop("anyOf")))

    return RequestModels(ask=AskRequest, batch=BatchRequest, chat=ChatRequest, invocation=InvocationRequest)
