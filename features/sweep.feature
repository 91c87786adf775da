@sweep @slow
Feature: Prompt-template sweeps with Hydra multirun end in a verdict
  `python main.py -m mode=experiment prompt=...` runs one job per template in one process (Hydra's basic launcher),
  each an MLflow run under one parent run for the sweep, and names the best template at the end.

  Scenario: A three-template sweep compares the templates and names the best one
    Given a fresh data directory
    When I sweep "python main.py -m mode=experiment eval=quick prompt=concise,detailed,step_by_step"
    Then it succeeds, and the sweep's run has 3 child runs, one per template, with the same scores logged
    And the sweep's run holds the summary table and the chart, and names the best template, whose prompt version gets the alias "best"
    And the model was loaded once and reused by the other 2 jobs
    And every job's run records the evaluation dataset "eval-quick" version 1, which exists once

  Scenario: A broken template fails its job while the others complete
    Given a fresh data directory
    And an extra prompt template "broken" without {{question}}
    When I sweep "python main.py -m mode=experiment eval=quick prompt=concise,broken,detailed" with the extra templates
    Then it fails with "1 of 3 sweep jobs failed"
    And the summary marks job "prompt=broken" failed with "must contain {{question}}", and the other 2 completed with their scores

  Scenario: An Optuna search scores each trial and agrees with the sweep's ranking on the best one
    Given a fresh data directory
    When I sweep "python main.py -m +experiment=search hydra.sweeper.n_trials=2 eval=quick model.generation.max_new_tokens=16"
    Then it succeeds, and the sweep's run has 2 child runs, one per trial, with the same scores logged
    And Optuna's best value is the best trial's "fact_agreement/mean", and its best parameters are that trial's overrides
