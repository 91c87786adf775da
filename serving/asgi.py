"""``uvicorn serving.asgi:app``: the app configured from the environment (MLFLOW_MODEL_URI, SERVING_*)."""

from serving.http.app import create_app
from serving.http.settings import Settings

app = create_app(Settings.from_env())
