from __future__ import annotations

from pytest_bdd import scenarios, then

scenarios("server_config.feature")


@then("no MLflow database was created")
def no_database(workspace):
    assert not (workspace.data_dir / "mlflow.db").exists()
