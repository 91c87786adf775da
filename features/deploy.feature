@deploy @slow
Feature: mode=deploy registers the model as the challenger, only when it answers
  The model is logged as an MLflow pyfunc, loaded back and asked a smoke question; only then is it registered
  with the alias "challenger". A model that fails the smoke prediction leaves the registry as it was. Deploying never
  moves "champion": mode=promote does (promote.feature).

  Scenario: Deploying registers a version and points the alias at it
    Given a fresh data directory
    When I run "python main.py mode=deploy"
    Then it succeeds, printing these lines
      """
      registered langchain-e2e-model version 1; alias 'challenger' -> 1
      """
    And registered model "langchain-e2e-model" has 1 version, with the alias "challenger" on version 1
    And the registered version loads and answers a plain string, a dict, a list and a DataFrame
    And its serving input example is the smoke request, with the smoke check's 16 new tokens

  Scenario: A failing smoke prediction leaves the alias and the versions alone
    Given a model deployed and promoted to champion
    And I note the registry
    When I run "python main.py mode=deploy deploy.smoke.min_answer_chars=100000"
    Then it fails, printing these lines
      """
      smoke prediction
      Nothing was registered; alias 'challenger' still points to version
      """
    And the registry is as I noted it, and the failed deploy run is marked FAILED with the smoke prediction
