@deploy @slow
Feature: mode=deploy registers the model and moves the alias only when it answers
  The model is logged as an MLflow pyfunc, loaded back and asked a smoke question; only then is it registered
  and the alias moved. A model that fails the smoke prediction leaves the registry as it was.

  Scenario: Deploying registers a version and points the alias at it
    Given a fresh data directory
    When I run "python main.py mode=deploy"
    Then it succeeds
    And registered model "langchain-e2e-model" has 1 version
    And the alias "champion" points to version 1
    And the output mentions "alias 'champion' -> 1"
    And the registered version loads and answers a plain string, a dict, a list and a DataFrame

  Scenario: A failing smoke prediction leaves the alias and the versions alone
    Given a model registered by mode=deploy
    And I note the registry
    When I run "python main.py mode=deploy deploy.smoke.min_answer_chars=100000"
    Then it fails with "Nothing was registered; alias 'champion' still points to version"
    And the output mentions "smoke prediction"
    And the registry is as I noted it
    And the failed deploy run is marked FAILED
