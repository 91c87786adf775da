"""Declarative lifecycle of a generative language model on MLflow 3.

Import cost matters here: `python main.py --help` imports this package, so nothing heavy (mlflow, torch,
transformers, langchain) is imported at module level anywhere outside ``lifecycle.integrations``.
"""

__version__ = "0.1.0"
