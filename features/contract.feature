@contract @slow
Feature: /openapi.json is the exact contract, and /docs shows it with no internet
  Clients are generated from /openapi.json and gateways validate against it: every answer the server gives must be one
  the document allows, and every request the document allows must be answered. The server runs with small limits
  (100-character questions, at most 2 new tokens, 4 questions a batch, 2 chat messages), so that every request the
  document allows also fits the model's token limit, which a schema cannot state.

  Scenario: Requests generated from the live document find no difference
    Given "python -m serving" with small limits is running
    When schemathesis runs every check against its /openapi.json
    Then it finds no difference between the document and the server

  Scenario: The document carries the limits the server enforces, read from its settings
    Given "python -m serving" with small limits is running
    When I read its /openapi.json
    Then a question may have at most 100 characters, max_new_tokens at most 2 and a batch at most 4 questions
    And every 4xx of every operation has the one error body, and the streams are text/event-stream

  Scenario: /docs renders every operation in a real browser with no internet
    Given "python -m serving" with small limits is running
    When Chromium opens /docs
    Then the page shows all 9 operations, from assets the server serves itself, and a screenshot is kept
