"""`amlwire conformance`: what each probe settles, and how an answer from Azure becomes a world option's value.

The sandbox marks each Azure behaviour spec / doc / field / unverified and, where unverified, lets a world option
choose the answer. A probe asks the user's own Azure the smallest question that tells the options apart; these
pure functions read the answer. The I/O is in cli/conformance.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from amlwire.domain.azure import IssuerAnswer

Need = Literal["workspace", "cluster", "failed_job", "timed_out_job", "deleted_issuer", "kubeconfig"]
AUDIENCE = "api://AzureADTokenExchange"
STREAM_AUTH = "ScriptExecution.StreamAccess.Authentication"
SEGMENTS = tuple(STREAM_AUTH.split("."))
FINISHED_WORDS = frozenset({"succeeded", "failed", "canceled", "cancelled"})
ACTION_WORDS = frozenset({"creating", "updating", "deleting", "accepted"})


@dataclass(frozen=True)
class Probe:
    """One question for the user's Azure: the sandbox rule it settles and the world option it sets."""

    id: str
    rule: str
    option: str  # the world option's path in a world file (rules.tagNames), "" for a figure only
    checks: str
    needs: tuple[Need, ...] = ()
    writes: bool = False
    role: str = "Reader"  # the built-in role that lets it run
    actions: tuple[str, ...] = ()
    scope: str = "the subscription"


def _scratch_compute(id_: str, rule: str, option: str, checks: str, verbs: tuple[str, ...]) -> Probe:
    """A probe that attaches a compute of its own (then detaches it) in the workspace of the scratch group."""
    return Probe(
        id_,
        rule,
        option,
        checks,
        needs=("workspace", "cluster"),
        writes=True,
        role="AzureML Compute Operator",
        actions=tuple(f"Microsoft.MachineLearningServices/workspaces/computes/{verb}" for verb in verbs),
        scope="the workspace (in the scratch resource group)",
    )


PROBES: tuple[Probe, ...] = (
    Probe(
        "arm-budget",
        "arm.throttling",
        "",
        "what ARM says is left of the subscription's read budget (x-ms-ratelimit-remaining-subscription-reads) "
        "on a read of the workspace",
        needs=("workspace",),
        actions=("Microsoft.MachineLearningServices/workspaces/read",),
        scope="the workspace",
    ),
    _scratch_compute(
        "tag-names",
        "arm.tag-names",
        "rules.tagNames",
        "whether attaching an AML compute whose tag name holds '/' is refused (400 InvalidTagNameCharacters)",
        ("write",),
    ),
    _scratch_compute(
        "operation-status-words",
        "arm.operation-status-words",
        "rules.operationStatusWords",
        "the word an operation-status body says while an AML compute attach and detach run",
        ("write", "delete"),
    ),
    Probe(
        "job-timeout",
        "ml.job-timeout",
        "rules.jobTimeout",
        "how a job that ran past limits.timeout ended (a job you name)",
        needs=("workspace", "timed_out_job"),
        role="AzureML Data Scientist",
        actions=("Microsoft.MachineLearningServices/workspaces/jobs/read",),
        scope="the workspace",
    ),
    Probe(
        "stream-access-error",
        "data.stream-error-shape",
        "rules.streamAccessError",
        f"how AML reports {STREAM_AUTH} (a failed job you name): flat, one innerError per segment, or words only",
        needs=("workspace", "failed_job"),
        role="AzureML Data Scientist",
        actions=("Microsoft.MachineLearningServices/workspaces/experiments/runs/read",),
        scope="the workspace",
    ),
    Probe(
        "fic-write-window",
        "msi.fic-concurrent",
        "timing.ficWriteWindowSeconds",
        "how long a federated credential write holds its identity: a second write meanwhile gets 409 "
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        writes=True,
        role="Managed Identity Contributor",
        actions=(
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
        ),
        scope="the scratch resource group",
    ),
    Probe(
        "fic-propagation",
        "entra.fic-propagation",
        "timing.ficPropagationSeconds",
        "seconds from writing a federated credential until Entra exchanges the cluster's service-account token "
        "with it (p50 and max over a few writes)",
        needs=("kubeconfig",),
        writes=True,
        role="Managed Identity Contributor",
        actions=(
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "serviceaccounts/token create (Kubernetes, namespace default)",
        ),
        scope="the scratch resource group",
    ),
    Probe(
        "role-propagation",
        "authz.ra-propagation",
        "timing.rolePropagationSeconds",
        "seconds from assigning Reader on the scratch identity until the identity itself may read it",
        needs=("kubeconfig",),
        writes=True,
        role="Role Based Access Control Administrator",
        actions=("Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete"),
        scope="the scratch resource group",
    ),
    Probe(
        "deleted-cluster-issuer",
        "aks.issuer-after-delete",
        "rules.deletedClusterIssuer",
        "what a deleted AKS cluster's OIDC issuer answers for its discovery document (an issuer URL you name)",
        needs=("deleted_issuer",),
        role="",
        scope="none: the issuer is public",
    ),
)
BY_ID = {p.id: p for p in PROBES}
# Unverified behaviours no probe settles yet, and why: the report says so rather than guessing.
NOT_PROBED = {
    "rules.bareExtension": "needs a job on a cluster whose extension a bare ARM PUT installed",
    "clusters[].sidecarCredential": "needs the AzureML extension pods' logs of a cluster",
    "clusters[].jobServiceAccount": "needs the AzureML extension pods of a cluster",
}


@dataclass(frozen=True)
class Finding:
    """What a probe found: the answer in the user's words, and the world option's value it means (None: not
    settled, with why)."""

    probe: str
    answer: str
    value: str | float | None = None
    skipped: str = ""  # why it did not run (an input not given, a permission missing, writes not allowed)
    figures: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        p = BY_ID[self.probe]
        return {
            "probe": p.id,
            "rule": p.rule,
            "checked": p.checks,
            "answer": self.answer,
            "option": p.option or None,
            "value": self.value,
            **({"skipped": self.skipped} if self.skipped else {}),
            **({"figures": dict(self.figures)} if self.figures else {}),
        }


def status_word_option(words: list[str]) -> tuple[str | None, str]:
    """rules.operationStatusWords from the words an operation-status body said while it ran."""
    running = [w for w in words if w.lower() not in FINISHED_WORDS]
    if not running:
        return None, "the operations finished before a status read saw them running"
    seen = ", ".join(sorted(set(running)))
    if all(w.lower() == "inprogress" for w in running):
        return "inProgress", f"while running: {seen}"
    if all(w.lower() in ACTION_WORDS for w in running):
        return "specExamples", f"while running: {seen} (the action's own word)"
    return "other", f"while running: {seen}"


def tag_names_option(status: int, code: str) -> tuple[str | None, str]:
    """rules.tagNames from the answer to an attach whose tag name holds '/'."""
    if status == 400 and code == "InvalidTagNameCharacters":
        return "refuse", f"{status} {code}"
    if status < 300:
        return "accept", f"{status}: attached with the tag name"
    return None, f"{status} {code}: neither a tag refusal nor an attach"


def job_timeout_option(status: str, timeout: object) -> tuple[str | None, str]:
    """rules.jobTimeout from a job that had limits.timeout and ran past it."""
    if not timeout:
        return None, f"the job has no limits.timeout (status {status})"
    if status in ("Canceled", "Failed"):
        return status, f"ended {status} with limits.timeout {timeout}"
    return None, f"the job is {status}: not one that ran past its timeout"


def stream_error_option(error: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """rules.streamAccessError from the error tree of a job that failed on storage access."""
    if not error:
        return None, "the job has no error"
    chain = []
    inner: Any = error.get("innerError") or error.get("inner_error")
    while isinstance(inner, Mapping) and inner.get("code"):
        chain.append(str(inner["code"]))
        inner = inner.get("innerError") or inner.get("inner_error")
    message = str(error.get("message") or "")
    if STREAM_AUTH in chain:
        return "flat", f"innerError code {STREAM_AUTH}" + (
            " and the code in the message" if STREAM_AUTH in message else ""
        )
    if [c for c in chain if c in SEGMENTS] == list(reversed(SEGMENTS)) or [c for c in chain if c in SEGMENTS] == list(
        SEGMENTS
    ):
        return "nested", "one innerError per segment: " + " > ".join(chain)
    if "permission denied when access stream" in message or "Authentication failed" in message:
        return "messageOnly", "no code: the message alone says storage access failed"
    return None, "the error is not a storage-access failure: name a job that failed with " + STREAM_AUTH


def deleted_issuer_option(answer: IssuerAnswer) -> tuple[str | None, str]:
    """rules.deletedClusterIssuer from what a deleted cluster's issuer answered."""
    if answer.state == "gone":
        return "notFound", answer.detail
    if answer.state == "publishing":
        return "served", f"{answer.detail}: its discovery document is still served"
    return None, answer.detail


def world_options(findings: list[Finding]) -> dict[str, Any]:
    """The settled values as a world-options document the sandbox loads (amlwire sandbox --options)."""
    options: dict[str, Any] = {}
    for f in findings:
        path = BY_ID[f.probe].option
        if f.value is None or not path:
            continue
        node = options
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = f.value
    return options


_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_RESOURCE_PATH = re.compile(r"/subscriptions/[^\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """A report line without subscription, tenant or object IDs or resource paths (unless the user opts in)."""
    return _IDS.sub("<id>", _RESOURCE_PATH.sub("<resource>", text))


def permissions_table() -> list[tuple[str, str, str, str]]:
    """(probe, role, actions, scope) for --print-permissions."""
    return [(p.id, p.role or "none", ", ".join(p.actions) or "-", p.scope) for p in PROBES]


def seconds_option(samples: list[float]) -> tuple[float | None, dict[str, float]]:
    """A timing option from measured seconds: the slowest seen (what amlwire must wait for), with p50 and max."""
    if not samples:
        return None, {}
    ordered = sorted(samples)
    figures = {"p50": round(ordered[len(ordered) // 2], 2), "max": round(ordered[-1], 2), "samples": len(ordered)}
    return round(ordered[-1], 1), figures
