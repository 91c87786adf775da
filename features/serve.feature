@serve @slow
Feature: mode=serve prints commands that serve the registered model
  The printed `mlflow models serve` command works as printed and answers the MLflow scoring protocol.

  Scenario: The printed mlflow models serve command answers /invocations
    Given a model deployed and promoted to champion
    When I run "python main.py mode=serve"
    Then it succeeds, printing these lines
      """
      mlflow models serve -m models:/langchain-e2e-model@champion --env-manager local
      """
    And the printed mlflow models serve command, on a free port, answers dataframe_split and inputs payloads
    And python -m serving answers the same payloads with the same predictions

  Scenario: Replicas on Ray refuse a tracking store they cannot share
    Given a model deployed and promoted to champion
    When I run "python main.py mode=serve serve.backend=ray serve.ray.address=127.0.0.1:6379"
    Then it fails with "cannot share the tracking store sqlite:///"
