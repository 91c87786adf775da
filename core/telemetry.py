"""The names a trace of an answer carries, whoever records it: this project's server (``serving.http.tracing``, exported
through OpenTelemetry) and the registered model's pyfunc (through MLflow's tracing). Searchable as trace tags, so a
reader and ``mode=monitor`` treat both paths alike."""

MODEL_NAME = "lifecycle.model.name"
MODEL_VERSION = "lifecycle.model.version"
MODEL_ALIAS = "lifecycle.model.alias"
PROMPT_NAME = "lifecycle.prompt.name"
PROMPT_VERSION = "lifecycle.prompt.version"
ROUTE = "lifecycle.route"
HTTP_STATUS = "lifecycle.http_status"
# span attributes, in seconds: waiting for a row of the batch, until the first token, from it to the last
QUEUE_WAIT_S = "lifecycle.queue_wait_s"
TIME_TO_FIRST_TOKEN_S = "lifecycle.time_to_first_token_s"
DECODE_S = "lifecycle.decode_s"
# the generation settings a trace records, under OpenTelemetry's GenAI names where they exist
GENERATION_ATTRIBUTES = {
    "max_new_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "repetition_penalty": "gen_ai.request.repetition_penalty",
}
# the assessments /v1/feedback records on a trace: the user's verdict (its default name) and a corrected answer
FEEDBACK = "user_feedback"
EXPECTED_RESPONSE = "expected_response"  # the expectation name MLflow's scorers and datasets read
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"


def generation_attributes(settings) -> dict:
    """``settings`` (max_new_tokens, temperature, ...) as the span attributes a trace records."""
    return {GENERATION_ATTRIBUTES[k]: v for k, v in settings.items() if k in GENERATION_ATTRIBUTES and v is not None}
