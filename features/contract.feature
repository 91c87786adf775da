@contract @slow
Feature: /openapi.json is the exact contract, and /docs shows it with no internet
  Clients are generated from /openapi.json and gateways validate against it: every answer the server gives must be one
  the document allows, and every request the document allows must be answered, or refused only for a reason the
  document states. A schema cannot state a token limit, so the description of every operation that reads a prompt
  does, and a longer prompt gets a 400 of its own. The server runs with small limits (100-character questions,
  64-token prompts, at most 2 new tokens, 4 questions a batch, 2 chat messages), so that a run is quick and often
  reaches the token limit.

  Scenario: Requests generated from the live document find no difference
    Given "python -m serving" with small limits is running
    When schemathesis runs every check, 40 examples per operation, against its /openapi.json
    Then it finds no difference between the document and the server, and no valid request refused for a reason the document does not state

  Scenario: The document carries the limits the server enforces, read from its settings
    Given "python -m serving" with small limits is running
    When I read its /openapi.json
    Then a question may have at most 100 characters, max_new_tokens at most 2 and a batch at most 4 questions
    And every 4xx of every operation has the one error body, and the streams are text/event-stream

  Scenario: A prompt over the token limit gets the documented 400 on every operation that reads one
    Given "python -m serving" with small limits is running
    When I read its /openapi.json
    Then the 5 operations that read a prompt state a limit of 64 tokens, and their 400 names context_length_exceeded
    And a prompt over it gets 400 context_length_exceeded with its token count on each of them

  Scenario: /docs renders every operation in a real browser with no internet
    Given "python -m serving" with small limits is running
    When Chromium opens /docs
    Then the page shows all 11 operations, from assets the server serves itself, and a screenshot is kept
