@experiment @slow
Feature: mode=experiment tracks a model's answers to the evaluation questions
  One command loads the offline model, registers the prompt templates, builds the LangChain chain, answers every
  evaluation question in its own nested run and scores the answers, with every phase traced.

  Background:
    Given a data directory shared by this feature
    And "python main.py mode=experiment eval=quick model.generation.max_new_tokens=32" has run there

  Scenario: Each evaluation question gets its own nested run
    Then it succeeds
    And the experiment run has a nested run for each of the 3 questions
    And each question run logged latency_s, tokens_generated and tokens_per_s and its answer

  Scenario: Every phase is traced
    Then the experiment run's traces include load_model, register_prompts, build_chain, answer_questions, evaluate

  Scenario: Every prompt template is registered and the one in use is aliased
    Then the prompt registry holds qa-concise, qa-detailed and qa-step-by-step
    And the alias "active" of "qa-concise" points to its latest version

  Scenario: The questions are an MLflow evaluation dataset, and the run records which version it answered
    Then the latest experiment run records the evaluation dataset "eval-quick" version 1, holding 3 questions

  Scenario: The answers are scored offline
    Then the experiment run has the metrics fact_agreement/mean, answer_relevance/mean, non_empty/mean, within_length/mean
    And the output mentions "scores: answer_relevance/mean="

  Scenario: The converted model is reused, not converted again
    Then the output mentions "reusing model folder"
    And the output does not mention "converting"
