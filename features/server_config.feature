@server_config
Feature: mode=server-config prints how to run a tracking server for the chosen storage

  Scenario: Local storage
    Given a scratch directory
    When I run "python main.py mode=server-config"
    Then it succeeds, printing these lines
      """
      mlflow server --backend-store-uri sqlite:///<data_dir>/mlflow.db
      --artifacts-destination file://<data_dir>/mlartifacts
      --port 5050 --workers 1
      MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
      export MLFLOW_TRACKING_URI=http://127.0.0.1:5050
      """
    And no MLflow database was created

  Scenario: S3 storage names the endpoint and the variables, never a secret
    Given a scratch directory
    When I run "python main.py mode=server-config storage=s3 storage.bucket=models"
    Then it succeeds, printing these lines
      """
      --artifacts-destination s3://models/lifecycle/mlartifacts
      export MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:9878
      export AWS_SECRET_ACCESS_KEY=<your secret key>
      """

  Scenario: A team's server on PostgreSQL names the database and the variable for its password, never the password
    Given a scratch directory
    When I run "python main.py mode=server-config backend=postgresql storage=s3"
    Then it succeeds, printing these lines
      """
      mlflow server --backend-store-uri postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow
      --artifacts-destination s3://mlflow/lifecycle/mlartifacts
      export PGPASSWORD=<the database user's password>
      python main.py mode=server-config backend=postgresql storage=s3 serve.run=true
      """
    And no MLflow database was created
