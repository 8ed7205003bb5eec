"""Seeded fault campaigns against a LocalStack, and the invariants checked after every one.

`tests/reliability` asserts on what these return; `bench/chaos.py` prints it. The operator runs as its own
process (`amlwire run`, as in the pod) so that it can be killed with SIGKILL at any point.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from amlwire.adapters.kube.client import custom_api
from amlwire.domain.azure import managed_cluster_id
from amlwire_devenv.stack import LocalStack, spawn_operator

GROUP, VERSION = "amlwire.io", "v1alpha1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# ARM calls a fresh wiring and a job submission make (bench/wiring.py, bench/jobs.py): kill points lie inside.
WIRING_CALLS = 15
SUBMISSION_CALLS = 4
NOT_ARM = ("control.", "entra.", "metadata.", "sandbox.log")
TERMINAL_JOB = ("Completed", "Failed", "Canceled")
# Three independent draws of 7.2% each: 1 - 0.928**3 = 20% of ARM calls meet a 429, a 500 or latency;
# calls that start a long-running operation also see that operation fail with the same 20%.
FAULT_PROBABILITY = 0.072
LRO_FAILURE_PROBABILITY = 0.2
RETRY_AFTER = 1.0
FAULT_MIX = ({"status": 429, "retryAfter": RETRY_AFTER}, {"status": 500}, {"latency": 0.4})
LRO_STARTS = (("ml.compute", "PUT"), ("ml.compute", "DELETE"), ("ext.extension", "PUT"), ("ext.extension", "PATCH"))


def cloud_faults(seed: int) -> list[dict[str, Any]]:
    """The sandbox fault specs for a fifth of ARM calls failing, each drawing from its own seeded sequence."""
    faults = [{"route": "*", "probability": FAULT_PROBABILITY, **fault} for fault in FAULT_MIX]
    faults += [
        {"route": route, "method": method, "lroFailed": True, "probability": LRO_FAILURE_PROBABILITY}
        for route, method in LRO_STARTS
    ]
    return [{**fault, "seed": seed + index} for index, fault in enumerate(faults)]


def arm_calls(calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if not c["route"].startswith(NOT_ARM)]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def is_true(obj: dict[str, Any] | None, type_: str = "Ready") -> bool:
    found = condition(obj or {}, type_)
    return bool(found and found["status"] == "True")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


# -- invariants (pure: snapshots in, problems out) ---------------------------------------------------
def federation_problems(fics: list[dict[str, Any]], wanted: set[tuple[str, str]]) -> list[str]:
    """Every FIC on the identity is wanted by a live AttachedCompute, and none is there twice."""
    seen = Counter((f["issuer"], f["subject"]) for f in fics)
    problems = [f"duplicate FIC for {subject} at {issuer}" for (issuer, subject), n in seen.items() if n > 1]
    problems += [
        f"orphaned FIC for {subject} at {issuer}" for issuer, subject in seen if (issuer, subject) not in wanted
    ]
    problems += [
        f"missing FIC for {subject} at {issuer}" for issuer, subject in wanted if (issuer, subject) not in seen
    ]
    return problems


def role_assignment_problems(assignments: list[dict[str, Any]], wanted: set[tuple[str, str]]) -> list[str]:
    """The identity holds exactly the wanted (scope, role definition) pairs, each once."""
    seen = Counter((a["scope"].lower(), a["roleDefinitionId"].rsplit("/", 1)[-1]) for a in assignments)
    problems = [f"duplicate role assignment {role} on {scope}" for (scope, role), n in seen.items() if n > 1]
    problems += [f"orphaned role assignment {role} on {scope}" for scope, role in seen if (scope, role) not in wanted]
    problems += [f"missing role assignment {role} on {scope}" for scope, role in wanted if (scope, role) not in seen]
    return problems


def compute_status_problems(obj: dict[str, Any], resources: dict[str, Any]) -> list[str]:
    """What the AttachedCompute's status says exists, exists in Azure."""
    name, status = obj["metadata"]["name"], obj.get("status") or {}
    lowered = {k.lower() for k in resources}
    identity = obj["spec"]["identity"]["resourceId"]
    problems = [] if is_true(obj) else [f"{name} is not Ready"]
    if status.get("computeId") and status["computeId"].lower() not in lowered:
        problems.append(f"{name}: status.computeId {status['computeId']} does not exist")
    for fic in status.get("federatedCredentials", []):
        if f"{identity}/federatedIdentityCredentials/{fic['name']}".lower() not in lowered:
            problems.append(f"{name}: status names FIC {fic['name']}, which does not exist")
    for grant in status.get("roleAssignments", []):
        assignment = f"{grant['scope']}/providers/Microsoft.Authorization/roleAssignments/{grant['name']}"
        if assignment.lower() not in lowered:
            problems.append(f"{name}: status names role assignment {grant['name']}, which does not exist")
    return problems


def job_problems(obj: dict[str, Any], aml_jobs: list[dict[str, Any]]) -> list[str]:
    """One AML job per AmlJob, and the AmlJob's status says what AML says."""
    name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
    mine = [j for j in aml_jobs if (j.get("tags") or {}).get("amlwire.io/uid") == uid]
    if len(mine) != 1:
        return [f"{name}: {len(mine)} AML jobs carry its uid (want exactly 1)"]
    status = obj.get("status") or {}
    problems = []
    if status.get("amlJobName") != mine[0]["name"]:
        problems.append(f"{name}: status.amlJobName {status.get('amlJobName')} but AML has {mine[0]['name']}")
    if status.get("amlStatus") != mine[0]["status"]:
        problems.append(f"{name}: status.amlStatus {status.get('amlStatus')} but AML says {mine[0]['status']}")
    return problems


def live_computes(stack: LocalStack) -> list[dict[str, Any]]:
    found = custom_api(stack.kube).list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")
    return [o for o in found["items"] if not o["metadata"].get("deletionTimestamp")]


def wanted_federations(stack: LocalStack, computes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(issuer, subject) of every service account a live AttachedCompute lists, issuer as Azure reports it."""
    wanted = set()
    for obj in computes:
        cluster = obj["spec"]["cluster"]
        cluster_id = managed_cluster_id(
            cluster.get("subscriptionId") or obj["spec"]["workspace"]["subscriptionId"],
            cluster["resourceGroup"],
            cluster["name"],
        )
        issuer = (stack.ctl.resource(cluster_id) or {})["properties"]["oidcIssuerProfile"]["issuerURL"]
        for account in obj["spec"]["serviceAccounts"]:
            wanted.add((issuer, f"system:serviceaccount:{account['namespace']}:{account['name']}"))
    return wanted


def wanted_grants(computes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    from amlwire.domain.access import role_guid

    return {
        (grant["scope"].lower(), role_guid(grant["role"]))
        for obj in computes
        for grant in obj["spec"].get("access", {}).get("grants", [])
    }


def stack_problems(stack: LocalStack, identity_id: str, principal_id: str) -> list[str]:
    """The identity's FICs and role assignments are exactly what live AttachedComputes want; statuses are true."""
    resources = stack.ctl.state()["resources"]
    computes = live_computes(stack)
    prefix = f"{identity_id}/federatedIdentityCredentials/".lower()
    fics = [v["properties"] for k, v in resources.items() if k.lower().startswith(prefix)]
    assignments = [
        v["properties"]
        for k, v in resources.items()
        if "/roleassignments/" in k.lower() and v["properties"]["principalId"] == principal_id
    ]
    problems = federation_problems(fics, wanted_federations(stack, computes))
    problems += role_assignment_problems(assignments, wanted_grants(computes))
    for obj in computes:
        problems += compute_status_problems(obj, resources)
    return problems


# -- the operator as a process -------------------------------------------------------------------------
class OperatorProcess:
    """`amlwire run` against a LocalStack, restartable, killable with SIGKILL."""

    def __init__(self, stack: LocalStack, log_file: Path, **settings: Any) -> None:
        self.stack, self.log_file = stack, log_file
        self.settings = {"job_poll_interval": 0.5, **settings}  # a restart should not wait 30 s for a poll
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.process = spawn_operator(self.stack, self.log_file, **self.settings)
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet sends; returns the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


# -- crash campaign -------------------------------------------------------------------------------------
@dataclass
class Iteration:
    kind: str  # "wiring" or "submission"
    name: str
    kill_after: int  # ARM calls into the work at which SIGKILL was due
    killed_at: int  # ARM calls seen when it was sent (the process may be a call or two further)
    converge_seconds: float  # restart to converged
    arm_calls: int  # apply to converged, across the kill
    problems: list[str] = field(default_factory=list)


@dataclass
class CrashCampaign:
    """Apply work, SIGKILL the operator a seeded number of ARM calls into it, restart it, check the result."""

    stack: LocalStack
    operator: OperatorProcess
    seed: int
    converge_timeout: float = 60.0
    base_compute: str = "robotics-gpu"
    rng: random.Random = field(init=False)
    custom: Any = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - seeded on purpose, to replay a campaign
        self.custom = custom_api(self.stack.kube)

    # the objects
    def get_compute(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name)
            return found
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def get_job(self, name: str, namespace: str = "robotics") -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "amljobs", name)
        return found

    def apply_base(self) -> None:
        """The compute the job iterations run on, Ready before the first kill."""
        self.custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", example("attachedcompute.yaml"))
        if not wait_until(lambda: is_true(self.get_compute(self.base_compute)), self.converge_timeout):
            raise RuntimeError(f"{self.base_compute} did not become Ready before the campaign")

    # one iteration
    def _kill_after(self, mark: int, calls: int, done: Callable[[], bool]) -> int:
        """SIGKILL once the operator has made `calls` ARM calls since `mark` (or finished first)."""

        def reached() -> int | None:
            seen = len(arm_calls(self.stack.ctl.calls(since=mark)))
            return seen if seen >= calls or done() else None

        seen = wait_until(reached, self.converge_timeout, interval=0.01) or 0
        self.operator.kill()
        return int(seen)

    def _restart_and_wait(self, mark: int, done: Callable[[], bool]) -> tuple[float, int]:
        started = time.monotonic()
        self.operator.start()
        converged = wait_until(done, self.converge_timeout)
        seconds = time.monotonic() - started if converged else float("inf")
        return seconds, len(arm_calls(self.stack.ctl.calls(since=mark)))

    def wiring(self, index: int, identity_id: str, principal_id: str) -> Iteration:
        cluster = self.stack.add_cluster(f"aks-crash-{index}")
        manifest = example("attachedcompute.yaml")
        name = manifest["metadata"]["name"] = f"crash-{index}"
        manifest["spec"]["cluster"]["name"] = cluster
        manifest["spec"]["compute"]["name"] = f"gpu-crash-{index}"
        kill_after = self.rng.randint(1, WIRING_CALLS)
        mark = self.stack.ctl.mark()
        self.custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", manifest)

        def ready() -> bool:
            return is_true(self.get_compute(name))

        killed_at = self._kill_after(mark, kill_after, ready)
        seconds, calls = self._restart_and_wait(mark, ready)
        problems = stack_problems(self.stack, identity_id, principal_id)
        problems += self._delete_compute(name, identity_id, principal_id)
        return Iteration("wiring", name, kill_after, killed_at, seconds, calls, problems)

    def _delete_compute(self, name: str, identity_id: str, principal_id: str) -> list[str]:
        """Deleting it afterwards leaves no orphan either (and keeps the identity under its 20-FIC limit)."""
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name)
        if not wait_until(lambda: self.get_compute(name) is None, self.converge_timeout):
            return [f"{name}: not deleted within {self.converge_timeout}s"]
        return stack_problems(self.stack, identity_id, principal_id)

    def submission(self, index: int) -> Iteration:
        manifest = example("amljob-validate.yaml")
        name = manifest["metadata"]["name"] = f"crash-job-{index}"
        namespace = manifest["metadata"]["namespace"]
        kill_after = self.rng.randint(1, SUBMISSION_CALLS)
        mark = self.stack.ctl.mark()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "amljobs", manifest)

        def finished() -> bool:
            job = self.get_job(name, namespace)
            return (job.get("status") or {}).get("amlStatus") in TERMINAL_JOB and is_true(job)

        killed_at = self._kill_after(mark, kill_after, finished)
        seconds, calls = self._restart_and_wait(mark, finished)
        problems = [] if seconds != float("inf") else [f"{name}: did not finish within {self.converge_timeout}s"]
        problems += job_problems(self.get_job(name, namespace), self.stack.ctl.jobs())
        return Iteration("submission", name, kill_after, killed_at, seconds, calls, problems)

    def run(self, wirings: int, submissions: int) -> list[Iteration]:
        base = self.get_compute(self.base_compute) or {}
        identity_id = base["spec"]["identity"]["resourceId"]
        principal_id = base["status"]["identity"]["principalId"]
        results = [self.wiring(i, identity_id, principal_id) for i in range(wirings)]
        results += [self.submission(i) for i in range(submissions)]
        return results
