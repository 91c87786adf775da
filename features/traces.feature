@traces @slow
Feature: Every served answer comes back to MLflow as a trace
  `python -m serving` exports a trace of every answer through OpenTelemetry to a real `mlflow server` (the lean one
  `mode=server-config serve.run=true` starts, on the registered model's SQLite database). The server imports no
  MLflow; the traces land in the experiment of the run that logged the model, with no extra flag.

  Background:
    Given a model deployed and promoted to champion
    And a tracking server on its database

  Scenario: Answers through the OpenAI client, /ask and /invocations become traces in the model's experiment
    Given "python -m serving" for the champion, its traces sent to the tracking server, behind an API key
    When the OpenAI client asks and streams, and /ask and /invocations are asked
    Then each of the 4 answers is a trace in the model's experiment with its question and answer, version 1 as champion, and its token counts
    And the /ask answer names its trace in its body and its X-Trace-Id header, and the API key is in no trace

  Scenario: A caller's traceparent is joined, and a refused request is an error trace with its reason
    Given "python -m serving" for the champion, its traces sent to the tracking server, behind an API key
    When /ask is asked with a traceparent, and with a question of only spaces
    Then the first answer's trace is the caller's trace, and the refused one is an error trace saying "string_pattern_mismatch"

  Scenario: Feedback on an answer is an assessment on its trace, and a corrected answer an expectation
    Given "python -m serving" for the champion, its traces sent to the tracking server, behind an API key
    When /ask is asked, and its user sends feedback "no" with a rationale and a corrected answer
    Then the answer's trace holds that user's feedback false with its rationale, and the corrected answer as expected_response
    And feedback without the key gets 401, on an unknown trace 404 and with a malformed body 422, each with its reason

  Scenario: mode=monitor scores the served traffic and compares it with the champion's own evaluation
    Given "python -m serving" for the champion, its traces sent to the tracking server, behind an API key
    When 3 questions are asked on /ask, the first gets negative feedback, and mode=monitor reads this traffic
    Then it succeeds
    And the monitor run counted 3 traces with latency and time-to-first-token percentiles, tokens, a positive feedback share of 0 and answer_relevance against the champion's evaluation
    And each of the 3 answers' traces holds the monitor's answer_relevance

  Scenario: Production answers that score below the champion's evaluation fail mode=monitor
    Given "python -m serving" for the champion, its traces sent to the tracking server, behind an API key
    When 3 questions are asked on /ask with max_new_tokens 1, and mode=monitor reads this traffic
    Then it fails with "dropped below its evaluation by more than the margin on answer_relevance"

  Scenario: With SERVING_TRACE_CONTENT=false no question or answer text reaches a trace
    Given "python -m serving" for the champion, its traces sent to the tracking server, with "SERVING_TRACE_CONTENT=false"
    When the OpenAI client asks and streams, and /ask and /invocations are asked
    Then the 4 traces hold the token counts and version 1, and no question, message or answer text

  Scenario: A tracking server that goes away fails no request, and the traces resume once it is back
    Given a tracking server of this scenario on its database
    And "python -m serving" for the champion, its traces sent to this scenario's tracking server
    When the tracking server is killed while 16 clients ask
    Then every client got 200, the server is healthy, and /metrics counts the spans it could not export
    And feedback while the tracking server is down gets 503 with Retry-After and the reason
    And once the tracking server is back on its port, a new answer becomes a trace again

  Scenario: Production questions that failed become the next evaluation set, and the next promote answers them
    Given a model deployed and promoted to champion in a data directory of its own, on eval=quick
    And a tracking server of this scenario on its database
    And "python -m serving" for the champion, its traces sent to this scenario's tracking server
    When 3 new questions are asked on /ask, the first gets feedback "no" with a corrected answer, and mode=monitor harvests this traffic, the served model judging
    Then it succeeds
    And eval-quick now holds the disliked question from its trace with the corrected answer as expected_response, and its version moved from 1 to 2
    And every harvested question is one of the 3, from its own trace, and the monitor run says how many
    And each answer's trace holds the judge's relevance_to_query verdict with its rationale
    When a new version is deployed and "python main.py mode=promote eval=quick" runs
    Then it succeeds
    And both versions answered the disliked question in the promote run, judged on eval-quick version 2
