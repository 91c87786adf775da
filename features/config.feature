@config
Feature: Composing a run from config groups
  Users pick storage, model, mode, prompt and eval on the command line; mistakes fail before any work starts.

  Scenario: Printing the composed job config
    Given a scratch directory
    When I run "python main.py mode=experiment prompt=detailed --cfg job"
    Then it succeeds
    And the output mentions "name: qa-detailed"
    And the output mentions "- experiment"

  Scenario: Help lists the config groups and their options
    Given a scratch directory
    When I run "python main.py --help"
    Then it succeeds, printing these lines
      """
      mode: all, deploy, experiment, export, monitor, promote, serve, server-config, test
      export: default
      model: dialogpt, gpt2, smollm2
      """

  Scenario: An unknown model choice lists the available ones
    Given a scratch directory
    When I run "python main.py model=llama"
    Then it fails with "Could not find 'model/llama'"
    And the output mentions "smollm2"

  Scenario: A value of the wrong type is refused with the key's name
    Given a scratch directory
    When I run "python main.py model.generation.max_new_tokens=many"
    Then it fails with "max_new_tokens"

  Scenario: A misspelt key is refused
    Given a scratch directory
    When I run "python main.py registerd_model_name=x"
    Then it fails with "Could not override 'registerd_model_name'"

  Scenario: An unreachable hub model fails fast with what to do
    Given a scratch directory
    And an empty Hugging Face cache
    When I run "python main.py model=gpt2 mode=experiment"
    Then within 5 seconds it fails, printing these lines
      """
      huggingface-cli download gpt2
      model=smollm2
      """

  Scenario: A data_dir given as an S3 URL stops before anything is written, naming the command meant
    Given a scratch directory
    When I run "python main.py data_dir=s3://aiongenbucket/production_data"
    Then it fails, printing these lines
      """
      data_dir=s3://aiongenbucket/production_data is a URL, but data_dir is a local folder
      python main.py storage=s3 storage.bucket=aiongenbucket storage.prefix=production_data
      """
    And no folder named "s3:" was created where it ran
