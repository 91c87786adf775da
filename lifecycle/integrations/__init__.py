"""The only modules that import mlflow, torch, transformers, langchain or boto3. Import them inside functions."""
