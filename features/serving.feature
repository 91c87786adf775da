@serving @slow
Feature: The HTTP server answers questions about the registered model
  `python -m serving --model-uri models:/langchain-e2e-model@champion` on a loopback port, with the real model.

  Background:
    Given a model deployed and promoted to champion

  Scenario: The server reports not-ready until the model has loaded
    Given a server for the registered model
    Then its first health answer was 503 "loading" and it became ready with 200

  Scenario: The model info says what runs the model and what makes its steps fast
    Given a server for the registered model
    Then the model info shows dtype "float32" on "cpu" with "121 linear layers packed for oneDNN in float32"
    And the model info shows dtype "float32" on "cpu" with "lean forward pass (30 layers, q/k/v and gate/up stacked: 4 products a layer)"

  Scenario: A bfloat16 server measures how its answers agree with float32 once it is idle
    Given a server for the registered model with "SERVING_DTYPE=bfloat16"
    Then the model info shows dtype "bfloat16" on "cpu" with "activations, attention and KV cache in float32"
    And the model info soon reports how many of the 8 evaluation answers match float32
    And the server still answers "/ask" with 200

  Scenario: An int8 server quantizes every linear layer and measures how its answers agree with float32
    Given a server for the registered model with "SERVING_DTYPE=int8"
    Then the model info shows dtype "int8" on "cpu" with "121 linear layers in int8 (weights per channel, activations per row)"
    And the model info soon reports how many of the 8 evaluation answers match float32
    And the server still answers "/ask" with 200

  Scenario: Asking one question
    Given a server for the registered model
    When I POST to "/ask"
      """
      {"question": "What is the capital of France?", "max_new_tokens": 16}
      """
    Then the response status is 200
    And the answer mentions "Paris"
    And the response names model version "1"

  Scenario: A request can bring its own prompt template
    Given a server for the registered model
    When I POST to "/ask"
      """
      {"question": "What is the capital of France?", "max_new_tokens": 16, "prompt_template": "Reply with one word only. {{question}}"}
      """
    Then the response status is 200
    And the answer mentions "Paris"

  Scenario: Asking a batch keeps the order
    Given a server for the registered model
    When I POST to "/ask/batch"
      """
      {"questions": ["What is the capital of France?", "Who wrote Romeo and Juliet?"], "max_new_tokens": 16}
      """
    Then the response status is 200
    And answer 1 mentions "Paris" and answer 2 mentions "Shakespeare"

  Scenario: The official OpenAI client gets a chat completion
    Given a server for the registered model
    When the OpenAI client asks "What is the capital of France?"
    Then the completion mentions "Paris" and reports its token usage

  Scenario: A question asked again, and a chat sent again with one more turn, read their earlier prompt from the cache
    Given a server for the registered model
    When the OpenAI client asks "What is the capital of France?" twice, then goes on with "And of Italy?"
    Then the second answer is the first one, all of its prompt but the last token read from the prompt cache
    And the next turn read at least the whole first prompt from the cache, and /metrics counts every cached token
    And the question asked with a new cache_salt reads the shared prefix only, then all but its last token

  Scenario: The official OpenAI client's response_format gets JSON that follows its schema
    Given a server for the registered model
    When the OpenAI client asks "Is Paris the capital of France?" with a JSON schema of result (yes or no) and rationale
    Then the answer parses as JSON that the schema accepts, and so does a json_object answer
    And a schema with a look-behind pattern gets 400 saying the server cannot enforce it, and the server keeps serving

  Scenario: The official OpenAI client streams a chat completion
    Given a server for the registered model
    When the OpenAI client streams "What is Python?"
    Then several chunks arrived that together mention "Python" and the last one says why it stopped
    And asked for usage in the stream, a last chunk holds the usage the same question gets unstreamed

  Scenario: /v1/models lists the served model
    Given a server for the registered model
    Then the OpenAI client lists the model "langchain-e2e-model:1"

  Scenario: /ask/stream sends tokens as server-sent events
    Given a server for the registered model
    When I stream "What is Python?" from "/ask/stream"
    Then several token events arrived before a done event with the whole answer

  Scenario Outline: /invocations speaks the MLflow scoring protocol
    Given a server for the registered model
    When I POST to "/invocations"
      """
      <payload>
      """
    Then the response status is 200
    And there are <count> predictions and the first mentions "<fact>"

    Examples:
      | payload                                                                                                      | count | fact  |
      | {"dataframe_split": {"columns": ["question"], "data": [["What is the capital of France?"]]}, "params": {"max_new_tokens": 12}} | 1 | Paris |
      | {"dataframe_records": [{"question": "What is the capital of France?"}, {"question": "What is Python?"}], "params": {"max_new_tokens": 12}} | 2 | Paris |
      | {"instances": ["What is the capital of France?"], "params": {"max_new_tokens": 12}}                          | 1     | Paris |
      | {"inputs": {"question": "What is the capital of France?"}, "params": {"max_new_tokens": 12}}                 | 1     | Paris |

  Scenario: The other doors of MLflow's scoring server: /ping, /version and a text/csv body
    Given a server for the registered model
    When I POST to "/invocations" as "text/csv"
      """
      question\nWhat is the capital of France?\n"What is Python? Say it, please."
      """
    Then the response status is 200
    And there are 2 predictions and the first mentions "Paris"
    And a text/csv body with a second column gets 400 saying what the columns may be
    And /ping answers 200 and /version the package's version

  Scenario Outline: Bad input gets a 4xx that says what is allowed, never a 500
    Given a server for the registered model
    When I POST to "<path>" as "<content_type>"
      """
      <body>
      """
    Then the response status is <status>
    And the error mentions "<message>"

    Examples:
      | path        | content_type     | body                                          | status | message                              |
      | /ask        | application/json | {"question": "   "}                           | 422    | should match pattern                 |
      | /ask        | application/json | {"question": "hi", "max_new_tokens": 99999}   | 422    | less than or equal to 512            |
      | /ask        | application/json | {"question": "hi", "temperature": 5}          | 422    | less than or equal to 2              |
      | /ask        | application/json | {"question": 42}                              | 422    | valid string                         |
      | /ask        | application/json | {"question": "hi", "colour": "blue"}          | 422    | Extra inputs are not permitted       |
      | /ask        | application/json | {"question": "hi", "prompt_template": "Q:"}   | 422    | should match pattern                 |
      | /ask        | application/json | {"question": "hi"                             | 422    | JSON decode error                    |
      | /ask/batch  | application/json | {"questions": []}                             | 422    | at least 1 item                      |
      | /invocations | text/plain      | question\nhi                                  | 415    | must be application/json or text/csv |
      | /invocations | application/json | {"inputs": ["hi"], "instances": ["hi"]}      | 422    | Extra inputs are not permitted       |
      | /invocations | application/json | {"inputs": [1]}                              | 422    | valid string                         |
      | /invocations | application/json | {"inputs": ["hi"], "params": {"top_k": 3}}   | 422    | Extra inputs are not permitted       |

  Scenario: Concurrent requests are batched into the same decoding steps
    Given a server for the registered model
    When 12 clients ask at once
    Then every client got 200
    And the model info shows a batch of more than 1 request
    And /metrics counts 12 answered "/ask" requests and a batch size histogram

  Scenario: No request's settings can fail the answers decoding beside it
    Given a server for the registered model
    When 6 greedy chat clients ask at once beside requests with a temperature of 1e-300, a top_p of 5e-324, repetition penalties of 0.5 and 2, and the /invocations params that once failed them all
    Then every request answered 200, decoded side by side
    And each greedy client got the answer it gets alone

  Scenario: A request that arrives mid-generation joins the running batch
    Given a server for the registered model
    When a short question arrives while a long answer is being generated
    Then the short answer comes back before the long one
    And the model info shows a decoding step with both requests in it

  Scenario Outline: Limits come from the settings and answer 422 with what is allowed
    Given a server for the registered model with "SERVING_MAX_QUESTION_CHARS=40 SERVING_MAX_BATCH_QUESTIONS=2 SERVING_MAX_NEW_TOKENS_CAP=16"
    When I POST to "<path>"
      """
      <body>
      """
    Then the response status is 422
    And the error mentions "<message>"

    Examples:
      | path                 | body                                                                                 | message                            |
      | /ask                 | {"question": "Why is the sky blue and the grass green and the sea so salty?"}      | at most 40 characters              |
      | /ask/batch           | {"questions": ["a?", "b?", "c?"]}                                                    | at most 2 items                    |
      | /ask                 | {"question": "hi", "max_new_tokens": 17}                                             | less than or equal to 16           |
      | /v1/chat/completions | {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 17}                  | less than or equal to 16           |

  Scenario: An overloaded server answers 429 at once and keeps serving
    Given a server for the registered model with "SERVING_MAX_BATCH_SIZE=1 SERVING_MAX_QUEUE=1"
    When 8 clients ask at once
    Then some clients got 429 with Retry-After and the others 200
    And the server still answers "/ask" with 200

  Scenario: A client that disconnects while queued frees its slot
    Given a server for the registered model with "SERVING_MAX_BATCH_SIZE=1 SERVING_MAX_WAIT_MS=0"
    When one client's long question is being generated and another client gives up while queued
    Then the abandoned request is dropped before generation and the first client still gets its answer

  Scenario: A client that disconnects mid-generation frees its row at once
    Given a server for the registered model with "SERVING_MAX_BATCH_SIZE=1 SERVING_MAX_WAIT_MS=0"
    When a client gives up while its long answer is being generated
    Then its row is freed before the answer is complete and the next client is served

  Scenario: SIGTERM lets the answers in flight finish, refuses new connections and ends the process
    Given a server for the registered model with "SERVING_DRAIN_S=60"
    When 8 answers are in flight and the server gets SIGTERM
    Then new connections are refused while they finish
    And all 8 answers come back whole, as each question is answered alone
    And the server process ends by itself within its drain time

  Scenario: An answer still running when the drain time is over answers 503 with Retry-After, never a bare 500
    Given a server for the registered model with "SERVING_DRAIN_S=0.5"
    When 8 long answers are in flight and the server gets SIGTERM
    Then each answer gets 503 of type stopping with Retry-After, saying to send it again
    And the server process ends by itself within its drain time

  Scenario: A request that outlives its timeout answers 504 and the server keeps serving
    Given a server for the registered model with "SERVING_REQUEST_TIMEOUT_S=0.3"
    When I POST to "/ask"
      """
      {"question": "What is machine learning?", "max_new_tokens": 64}
      """
    Then the response status is 504
    And the error mentions "no answer within 0.3 s"
    And "/health" answers 200 without a key

  Scenario: An API key protects everything but /health, and CORS allows only the configured origins
    Given a server for the registered model with "SERVING_API_KEY=k-feature-test-123 SERVING_CORS_ORIGINS=http://ui.test"
    Then "/health" answers 200 without a key
    And "/ask" answers 401 without a key and 200 with it
    And a browser preflight from "http://ui.test" is allowed and one from "http://evil.test" is not

  Scenario: mode=serve serve.run=true starts the server for the registered model
    When I start "python main.py mode=serve serve.run=true" on a free port
    Then it becomes ready and answers "/ask"
    And the answer is a trace in the serve run's experiment, through the tracking server started beside it
    And SIGTERM to its process alone ends it with status 0, stops the tracking server beside it and finishes its runs

  Scenario: Asking for a GPU where there is none stops at start and says what to use instead
    Given this machine has no CUDA GPU
    When I run "python main.py mode=serve serve.run=true serve.device=cuda serve.port=<free_port>"
    Then it fails with "sees no CUDA GPU; use --device cpu or auto"
