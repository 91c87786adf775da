@promote @slow
Feature: mode=promote lets a challenger replace the champion only when it is no worse
  mode=deploy registers each new version as the challenger. mode=promote answers the evaluation set with both the
  champion and the challenger, scores both answer sets with the same scorers, and moves "champion" (what serve and
  export use) only when the challenger is no worse on any score by more than its margin. The decision is explained
  in the promote run (a per-question table and a chart) and as tags on both versions.

  Scenario: A worse challenger is refused and the champion stays where it was
    Given a champion deployed with "prompt=concise"
    When a challenger deployed with "model.generation.max_new_tokens=3" meets it in "python main.py mode=promote eval=quick"
    Then it fails, printing these lines
      """
      challenger version 2 refused; 'champion' stays on 1
      fact_agreement: 0.00 against 1.00 (-1.00, margin 0.00)
      refused: worse than champion version 1 by more than the margin on answer_relevance, fact_agreement.
      """
    And "champion" is on version 1, version 2 is tagged "refused" and version 1 "kept"
    And the promote run holds a table of both answers to the 3 questions and a chart of the scores

  Scenario: A better challenger is promoted, and serve follows the champion
    Given a champion deployed with "model.generation.max_new_tokens=3"
    When a challenger deployed with "prompt=concise" meets it in "python main.py mode=promote eval=quick"
    Then it succeeds, printing these lines
      """
      challenger version 2 promoted: no worse than version 1 on any score; 'champion' -> 2 (was 1)
      fact_agreement: 1.00 against 0.00 (+1.00, margin 0.00)
      """
    And "champion" is on version 2, version 2 is tagged "promoted" and version 1 "replaced"
    And "python main.py mode=serve" names "serve models:/langchain-e2e-model@champion (version 2)"
