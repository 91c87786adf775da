@judge @slow
Feature: MLflow's judges score the answers through any OpenAI-compatible endpoint, this project's server included
  experiment.judge names the judge model, its endpoint's base URL and the variable that holds its key. Correctness,
  RelevanceToQuery and the Guidelines of conf/eval run through it; their rationales land in the run's traces. Here
  the judge is the registered model itself, served by `python -m serving`, whose response_format keeps even a
  135M-parameter model's verdicts valid JSON.

  Background:
    Given a model deployed and promoted to champion

  Scenario: The registered model, served by python -m serving, judges the experiment's answers
    Given "python -m serving" serves the champion as the judge, behind the API key in JUDGE_KEY
    When I run "python main.py mode=experiment eval=quick experiment.judge.model=langchain-e2e-model experiment.judge.key_env=JUDGE_KEY" against the judge
    Then it succeeds, and every judge call parsed: correctness/mean and relevance_to_query/mean are in the run
    And each answer's trace holds the judges' verdicts with their rationales
    And the run records the judge's model and endpoint, and the key appears nowhere in the output or the run

  Scenario: A judge endpoint that cannot be reached stops the run before any work, saying what to do
    When I run "python main.py mode=experiment eval=quick experiment.judge.model=m experiment.judge.base_url=http://127.0.0.1:<free_port>/v1 experiment.judge.key_env=null"
    Then it fails with "cannot be reached"
    And the output mentions "experiment.judge.model=null to score without judges"
