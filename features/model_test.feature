@model_test @slow
Feature: mode=test validates the registered model's answers
  The challenger, models:/langchain-e2e-model@challenger, answers the evaluation questions; the answers must meet the
  thresholds in conf/eval or the run fails.

  Scenario: The registered model passes validation
    Given a model deployed and promoted to champion
    When I run "python main.py mode=test"
    Then it succeeds
    And the output mentions "models:/langchain-e2e-model@challenger (version 1): 8 answers passed validation"
    And the latest test run logged fact_agreement_mean and an answers table

  Scenario: Asked to, the test reports how bfloat16 answers agree with float32
    Given a model deployed and promoted to champion
    When I run "python main.py mode=test test.compare_dtype=bfloat16"
    Then it succeeds
    And the output mentions "bfloat16 against float32:"
    And the latest test run logged how many of the 8 bfloat16 answers are identical to float32

  Scenario: Thresholds the answers miss fail the run and say which
    Given a model deployed and promoted to champion
    When I run "python main.py mode=test eval=quick eval.thresholds.max_answer_chars=5"
    Then it fails with "failed validation: answers longer than 5 chars"

  Scenario: Testing before anything is deployed says to deploy first
    Given a fresh data directory
    When I run "python main.py mode=test"
    Then it fails with "Run `python main.py mode=deploy` first"
