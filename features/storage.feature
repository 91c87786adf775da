@storage @slow
Feature: storage=s3 keeps artifacts in a real S3-compatible object store
  A SeaweedFS server (`python -m lifecycle.local_s3`, what `make s3` runs) on a free loopback port, with random
  credentials that exist only in the environment of the commands that need them.

  Background:
    Given a local S3 server with the bucket "mlflow"

  Scenario: The whole lifecycle lands the model's files in the bucket
    Given a fresh data directory
    When I run "python main.py storage=s3 mode=all eval=quick" against the S3 server
    Then it succeeds, with the registered model's weights and MLmodel in the bucket under "lifecycle/mlartifacts", where the experiment keeps its artifacts
    And the S3 secret appears nowhere under the data directory, in MLflow params or tags, or in the output
    And no copy of the model is left in the temporary folder

  Scenario: The server reads a registered model from the bucket and keeps no copy of it
    Given a model deployed to the S3 server
    When "python -m serving" serves "models:/langchain-e2e-model@challenger" from the S3 server
    Then the server answers a question on /ask
    And no copy of the model is left in the temporary folder

  Scenario Outline: A store that cannot be used fails fast, naming the endpoint and the cause
    Given a scratch directory
    When I run "python main.py storage=s3 mode=deploy <override>" against the S3 server with "<env>"
    Then it fails naming the S3 endpoint and "<cause>"
    And no MLflow database was created

    Examples:
      | override                       | env                                   | cause                                                       |
      |                                | AWS_SECRET_ACCESS_KEY=not-the-secret  | AWS_SECRET_ACCESS_KEY does not match the access key         |
      |                                | AWS_ACCESS_KEY_ID=nobody              | the access key in AWS_ACCESS_KEY_ID is not known there      |
      | storage.bucket=no-such-bucket  |                                       | bucket 'no-such-bucket' does not exist; create it, or set storage.create_bucket=true |
      |                                | AWS_SECRET_ACCESS_KEY=                | needs AWS_SECRET_ACCESS_KEY in the environment              |

  Scenario: An unreachable endpoint fails fast and says so
    Given a scratch directory
    When I run "python main.py storage=s3 mode=deploy" against a closed port
    Then it fails with "cannot reach the S3 endpoint"
    And no MLflow database was created

  Scenario: An S3 server that stops during deploy leaves the registry unchanged
    Given a model deployed to the S3 server
    When the S3 server stops while "python main.py storage=s3 mode=deploy" uploads the model
    Then it fails saying the endpoint cannot be reached, and the registry holds 1 version with alias "challenger" on version 1
    When the S3 server is back and "python main.py storage=s3 mode=deploy" runs again
    Then it succeeds, and the registry holds 2 versions with alias "challenger" on version 2

  Scenario: Through a tracking server, clients need no S3 credentials
    Given a fresh data directory
    And a tracking server started by "python main.py mode=server-config storage=s3 storage.prefix=proxied serve.run=true"
    When I run "python main.py storage=s3 mode=deploy" through the tracking server without AWS credentials
    Then it succeeds, with the registered model's weights and MLmodel in the bucket under "proxied/mlartifacts"
    And the deploy run's artifacts went through the server's proxy, leaving no copy of the model in the temporary folder
