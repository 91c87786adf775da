@export @slow
Feature: mode=export writes a standalone build context whose server needs neither MLflow nor S3
  `python main.py mode=export` writes a Dockerfile, pinned requirements, the model with its checksums, the server
  code, build/run/test scripts and a README into one folder that a machine with only Docker can build and run.

  Background:
    Given a model deployed and promoted to champion
    And "python main.py mode=export export.vendor_wheels=true" has written a bundle

  Scenario: The bundle holds what a remote machine needs and nothing it must not have
    Then the bundle has Dockerfile, .dockerignore, requirements.txt, build.sh, run.sh, test.sh, README.md, app/, model/ and wheels/
    And requirements.txt pins torch to its CPU build and names neither mlflow nor boto3
    And every file of the bundle's model matches its sha256 in model/manifest.json
    And no secret from the exporting environment appears anywhere in the bundle
    And the Dockerfile passes hadolint

  Scenario: The exported server runs in a fresh virtual environment without MLflow or boto3
    Given a fresh virtual environment with only the bundle's wheels
    Then mlflow and boto3 cannot be imported there
    When the bundle's server starts there on a free port
    Then the bundle's test.sh passes against it

  Scenario: A corrupted weight file is refused at start with a clear message
    Given a fresh virtual environment with only the bundle's wheels
    When one byte of the bundle's model.safetensors changes
    Then the bundle's server exits at start saying "model.safetensors does not match its sha256"

  Scenario: A bfloat16 export halves the model and reports what that costs, measured
    When I run "python main.py mode=export export.dtype=bfloat16 export.output_dir=<data_dir>/bf16"
    Then it succeeds
    And the bfloat16 model is at most 55% of the float32 one
    And the bfloat16 README reports the measured tokens/s and identical answers of both dtypes

  Scenario: A folder that is not an earlier export is never overwritten
    When I run "python main.py mode=export export.output_dir=<data_dir>"
    Then it fails with "is not an earlier export"
    And the data directory still holds its MLflow database

  @container
  Scenario: The image builds and runs with this machine's container tooling, as a non-root user
    Given podman with runc and a locally built Python base image
    When the bundle's build.sh builds the image and its run.sh starts it on a free port
    Then the bundle's test.sh passes against the container over HTTP
    And the container runs as a non-root user
    And with small limits, the container keeps the contract of its /openapi.json and a short soak gets no 5xx
    And started with SERVING_TRACES_URL of a tracking server on the container host, its answers are traces in the model's experiment
    And stopped with 8 answers in flight, the container lets all 8 finish and exits by itself
