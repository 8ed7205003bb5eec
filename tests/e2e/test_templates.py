"""What each template submits, read back from the sandbox: a job that would really run on the stock IsaacLab
image (../shared/reference/field-truth.md, "IsaacLab on AML")."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for
from tests.e2e.harness import WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model"}
CASES = {
    "train": ("amljob-train.yaml", {}),
    "validate-download": ("amljob-validate.yaml", {}),
    "validate-in-container": ("amljob-validate.yaml", {"model": {**MODEL, "delivery": "InContainer"}}),
}


def submitted(harness, example: str, **changes) -> dict:
    name = harness.apply_job(example, **changes)
    aml = wait_for(lambda: (harness.job(name).get("status") or {}).get("amlJobName"), timeout=30, what="submitted")
    return harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{aml}")


@pytest.mark.parametrize("case", CASES)
def test_isaaclab_templates_submit_jobs_that_would_run(harness, case):
    example, changes = CASES[case]
    harness.wired()
    job = submitted(harness, example, **changes)
    body, props = job, job["properties"]
    steps = props["command"].split(" && ")
    assert not [s for s in steps if re.match(r"^(python3?|pip3?) ", s)], "a bare python outside Isaac Sim's"
    runs_python = [s for s in steps if not s.startswith("echo ") and (".py" in s or "-m pip" in s)]
    assert runs_python
    assert all(s.startswith("./isaaclab.sh -p ") for s in runs_python), runs_python
    assert props["environmentVariables"]["ACCEPT_EULA"] == "Y"
    assert props["environmentVariables"]["PRIVACY_CONSENT"] == "Y"
    assert props["identity"] == {"identityType": "Managed"}
    assert props["resources"]["instanceType"] == "gpu-1"
    assert props["limits"]["timeout"] in ("PT24H", "PT2H", "P1D")
    if case == "train":
        assert "scripts/reinforcement_learning/rsl_rl/train.py" in props["command"]
        assert props["outputs"]["checkpoint"]["jobOutputType"] == "custom_model"
        assert props["outputs"]["checkpoint"]["mode"] == "ReadWriteMount"  # checkpoints land while it trains
    else:
        assert steps[0] == 'export AMLWIRE_OUTPUTS="$PWD/outputs"'
        pinned = "./isaaclab.sh -p -m pip install --quiet mlflow-skinny==2.15.1 azureml-mlflow==1.57.0"
        assert pinned in props["command"]
        assert "--seed 42" in props["command"]
    if case == "validate-in-container":
        assert "./isaaclab.sh -p /tmp/amlwire/fetch_model.py" in props["command"]
        assert "./isaaclab.sh -p -m pip install --quiet azure-ai-ml==1.35.2 azure-identity==1.27.0" in props["command"]
        assert "AZURE_CLIENT_ID" not in props["environmentVariables"]
        assert "inputs" not in props or "model" not in (props.get("inputs") or {})
    assert body["name"].startswith("j-")
