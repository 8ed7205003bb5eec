"""Hostile settings: a bad AMLWIRE_* variable or no kubeconfig is one line naming it, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ({"AMLWIRE_ARM_ENDPOINT": "http://management.azure.com"}, "AMLWIRE_ARM_ENDPOINT: must be an https:// URL"),
    ({"AMLWIRE_ARM_SHARE": "3"}, "AMLWIRE_ARM_SHARE: Input should be less than or equal to 1"),
    ({"AMLWIRE_ARM_WRITE_BUDGET": "fast"}, "AMLWIRE_ARM_WRITE_BUDGET: 'fast' is not SIZE/REFILL-PER-SECOND"),
    ({"AMLWIRE_KUBECONFIG": "/nonexistent/kubeconfig"}, "cannot reach Kubernetes"),
]


@pytest.mark.parametrize(("environment", "line"), CASES, ids=[next(iter(c[0])) for c in CASES])
def test_run_refuses_bad_settings_in_one_line(environment, line, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMLWIRE_", "KUBERNETES_"))}
    env.update(environment, HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "none"))
    done = subprocess.run(
        [sys.executable, "-m", "amlwire.cli.main", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert line in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
