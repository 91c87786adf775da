@lifecycle @slow
Feature: mode=all runs the whole lifecycle on the real offline model
  One command goes from the model package to a tracked experiment, a registered, tested and promoted model and the
  commands that serve it.

  Background:
    Given a data directory shared by this feature
    And "python main.py mode=all" has run there

  Scenario: Every stage succeeds under one parent run
    Then it succeeds
    And the parent run has nested runs experiment, deploy, test, promote, serve
    And the parent run logged the resolved config with status success

  Scenario: The summary says what ran and what to do next
    Then the output mentions these lines
      """
      registered langchain-e2e-model version 1; alias 'challenger' -> 1
      8 answers passed validation
      no 'champion' yet: challenger version 1 promoted without a comparison
      mlflow models serve -m models:/langchain-e2e-model@champion --env-manager local
      python -m serving --model-uri models:/langchain-e2e-model@champion
      mlflow ui --backend-store-uri sqlite:///<data_dir>/mlflow.db
      """
