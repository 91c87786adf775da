@ray @slow
Feature: Replicas on a Ray cluster
  `mode=serve serve.backend=ray` deploys this server as a Ray Serve application on a running cluster: replicas with
  the model loaded once each, the same endpoints and limits as the single process, behind Ray Serve's proxy, loading
  the model from the team's tracking server. Deploying again under the same name rolls out the version the champion
  alias names now, one replica at a time.

  Background:
    Given the champion deployed on a Ray cluster on loopback with "serve.replicas=2 serve.ray.cpus_per_replica=0.5"

  Scenario: Two replicas answer the openai client, /ask and /invocations, and say which version they serve
    Then 2 replicas of version 1 are running
    And the application answers the openai client, /ask and /invocations with the key set where the cluster started, 401 without it
    And an answer of the replicas is a trace in the experiment of the serve run
    And /metrics holds the series of both replicas, and their tokens add up to what the openai client was answered

  Scenario: More requests than the replicas and their queues hold are answered 429 with Retry-After, never a 5xx
    When 64 clients ask at once
    Then some get 429 with Retry-After, the others their answer, and none a 5xx

  Scenario: A newly promoted version rolls out under the load of 16 clients and no request fails
    When version 2 becomes the champion and is deployed again while 16 clients ask
    Then every request was answered right
    And 2 replicas of version 2 are running

  Scenario: A replica killed under load fails only the requests it held, and the application recovers by itself
    When one replica's process is killed with SIGKILL while 16 clients ask
    Then at most 16 requests failed, each with a 5xx or a broken connection, and every answer was right
    And 2 replicas of version 2 are running

  Scenario: A version that cannot start leaves the old replicas serving
    When a model folder that does not exist is deployed under the same name while 16 clients ask
    Then the deploy fails, saying that the model folder does not exist
    And every request was answered right
    And 2 replicas of version 2 are running
