"""mlflow (or mlflow-skinny) in the sandbox: logs to the run AML made for the job.

AML sets MLFLOW_TRACKING_URI to the workspace's azureml:// URI; that scheme is known only with azureml-mlflow
installed (as upstream: "Could not find a registered tracking store for scheme 'azureml'"). What is logged goes to
AMLWIRE_SANDBOX_MLFLOW, which the sandbox serves as the run's metrics, params and tags.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from typing import Any


class MlflowException(Exception):
    pass


def _record(kind: str, values: dict[str, Any]) -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme == "azureml" and importlib.util.find_spec("azureml.mlflow") is None:  # rule: isaac.packages
        raise MlflowException(
            f"Could not find a registered tracking store for scheme '{scheme}'. Supported schemes are: "
            "['', 'file', 'databricks', 'http', 'https', 'postgresql', 'mysql', 'sqlite', 'mssql']"
        )
    with open(os.environ["AMLWIRE_SANDBOX_MLFLOW"], "a") as file:
        file.write(json.dumps({"kind": kind, "values": values, "time": time.time()}) + "\n")


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    _record("metrics", {k: float(v) for k, v in metrics.items()})


def log_metric(key: str, value: float, step: int | None = None) -> None:
    log_metrics({key: value})


def log_params(params: dict[str, Any]) -> None:
    _record("params", {k: str(v) for k, v in params.items()})


def set_tag(key: str, value: Any) -> None:
    _record("tags", {key: str(value)})
