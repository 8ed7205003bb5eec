"""azureml-mlflow in the sandbox: its presence registers the azureml:// tracking scheme (see mlflow)."""
