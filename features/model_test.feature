@model_test @slow
Feature: mode=test validates the registered model's answers
  The model behind models:/langchain-e2e-model@champion answers the evaluation questions; the answers must meet the
  thresholds in conf/eval or the run fails.

  Scenario: The registered model passes validation
    Given a model registered by mode=deploy
    When I run "python main.py mode=test"
    Then it succeeds
    And the output mentions "models:/langchain-e2e-model@champion (version 1): 8 answers passed validation"
    And the latest test run logged fact_agreement_mean and an answers table

  Scenario: Thresholds the answers miss fail the run and say which
    Given a model registered by mode=deploy
    When I run "python main.py mode=test eval=quick eval.thresholds.max_answer_chars=5"
    Then it fails with "failed validation: answers longer than 5 chars"

  Scenario: Testing before anything is deployed says to deploy first
    Given a fresh data directory
    When I run "python main.py mode=test"
    Then it fails with "Run `python main.py mode=deploy` first"
