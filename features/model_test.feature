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
    And the latest test run records the evaluation dataset "eval-default" version 1, holding 8 questions
    And its prediction is a trace of the 8 questions, a span for each with its answer and token counts, tagged with version 1 and prompt "qa-concise", and holds no object's repr

  Scenario: The test answers an evaluation dataset that is already in MLflow, with no YAML
    Given a model deployed and promoted to champion
    When I run "python main.py mode=test eval=quick", then "python main.py mode=test eval=default eval.dataset=eval-quick"
    Then it succeeds
    And the output mentions "models:/langchain-e2e-model@challenger (version 1): 3 answers passed validation"
    And the latest test run records the evaluation dataset "eval-quick" version 1, holding 3 questions

  Scenario: An evaluation dataset that does not exist is named, with the ones that do
    Given a model deployed and promoted to champion
    When I run "python main.py mode=test eval.dataset=eval-nope"
    Then it fails with "eval.dataset=eval-nope: no evaluation dataset with that name"

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
