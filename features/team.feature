@team @slow
Feature: A team's tracking server on PostgreSQL with artifacts in S3, and sweeps on a Ray cluster
  A real PostgreSQL, a real S3 server and a real `mlflow server` (started by `mode=server-config serve.run=true
  backend=postgresql storage=s3`) run for the whole feature. Clients get only `tracking_uri=http://...`: no database
  password, no S3 credentials.

  Scenario: The whole lifecycle through the team's tracking server
    When a client runs "python main.py mode=all" through the team's tracking server
    Then it succeeds, with its runs in PostgreSQL and the registered model's files in the bucket
    And neither the database password nor the S3 secret is in any output, param, tag or artifact

  Scenario: Two experiments at once from two processes are both recorded
    When two clients run "python main.py mode=experiment eval=quick" at once, with prompts "concise" and "detailed"
    Then both succeed, and the server holds a finished experiment run for each prompt

  Scenario: The registered model is served from the team's tracking server
    Given the lifecycle ran through the team's tracking server
    When "python -m serving" serves "models:/langchain-e2e-model@champion" with only the tracking server's URL
    Then the server answers a question on /ask

  Scenario: The database stopped in the middle of a deploy fails the stage and registers nothing
    Given the lifecycle ran through the team's tracking server
    When the database stops while a client runs "python main.py mode=deploy"
    Then it fails with "failed the request (HTTP 5xx): its database or artifact store is not answering"
    And the output says "Nothing was registered", with no traceback
    And once the database is back, the registry holds the versions it held before, the alias unchanged

  Scenario Outline: The database is checked before the tracking server starts
    When the team's tracking server is started with "<setting>"
    Then it fails with "<message>"

    Examples:
      | setting                                             | message                                  |
      | backend.port=<free_port>                            | cannot reach PostgreSQL at 127.0.0.1     |
      | PGPASSWORD=not-the-password                         | refused user 'mlflow': export PGPASSWORD |
      | backend.database=nosuch                             | database 'nosuch' does not exist         |
      | backend.database=old_schema                         | mlflow db upgrade                        |
      | backend.uri=postgresql://mlflow:pw@127.0.0.1/mlflow | carries a password: remove it            |

  Scenario: A Ray sweep refuses a tracking store its workers cannot share
    When a client sweeps "python main.py -m hydra/launcher=ray mode=experiment prompt=concise,detailed" on SQLite
    Then it fails with "SQLite is one file on this machine"
    And no MLflow database was created

  @ray
  Scenario: A three-template sweep on a Ray cluster ends in a verdict; the broken job fails alone
    Given a Ray cluster on loopback with 2 CPUs
    When a client sweeps "python main.py -m hydra/launcher=ray mode=experiment eval=quick prompt=concise,broken,detailed" on the cluster
    Then it fails with "1 of 3 sweep jobs failed"
    And the summary marks job "prompt=broken" failed with "must contain {{question}}", and the other 2 completed with their scores
    And the best template's prompt version has the alias "best", and each worker loaded the model once
