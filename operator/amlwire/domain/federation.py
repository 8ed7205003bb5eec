"""Federation: which federated identity credentials the identity needs, and what to write to get there."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from amlwire.api import reasons as r
from amlwire.domain.azure import AUDIENCE, FederatedCredential, IssuerAnswer
from amlwire.domain.failures import BY_ID

FIC_LIMIT = 20
# The service accounts the AzureML extension's own components (the data-capability sidecar among them) run as
# in its release namespace; each needs a federated credential for keyless storage access (field practice:
# ../shared/DESIGN.md; the extension documents no other).
EXTENSION_SERVICE_ACCOUNTS = (("azureml", "default"), ("azureml", "training"))
NAME_PREFIX = "amlwire-"
NAME_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$")


def subject_of(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def credential_name(namespace: str, name: str, issuer: str, cluster: str = "") -> str:
    """Deterministic, within Azure's name rules, and distinct per (issuer, service account). It names the cluster
    (the AKS cluster's name), so anyone reading the identity's credentials — another cluster's amlwire, an admin in
    the portal — sees whose they are. Not the AttachedCompute: Azure allows one credential per issuer and subject,
    so the AttachedComputes of one cluster sharing an identity share its credentials."""
    digest = hashlib.sha256(f"{issuer}|{namespace}|{name}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-zA-Z0-9-]", "-", "-".join(p for p in (cluster, namespace, name) if p))
    readable = readable[: 120 - len(NAME_PREFIX) - len(digest) - 1].rstrip("-")
    return f"{NAME_PREFIX}{readable}-{digest}"


@dataclass(frozen=True)
class Budget:
    """How many federated credentials the identity holds (amlwire's and others'), and room for more clusters."""

    used: int
    per_cluster: int  # credentials one more cluster like this compute would need (its service accounts)
    limit: int = FIC_LIMIT

    @property
    def clusters_remaining(self) -> int:
        return max(0, self.limit - self.used) // max(1, self.per_cluster)

    def summary(self) -> str:
        return (
            f"{self.used} of {self.limit} federated credentials used; room for {self.clusters_remaining} more "
            f"cluster(s) at {self.per_cluster} each"
        )


@dataclass(frozen=True)
class Write:
    """A credential to create or correct, and why (a field failure's name)."""

    credential: FederatedCredential
    reason: str
    detail: str


@dataclass(frozen=True)
class Problem:
    """Something amlwire cannot fix itself: the reason and what the user should do."""

    reason: str
    message: str


@dataclass(frozen=True)
class FederationPlan:
    issuer: str
    writes: tuple[Write, ...] = ()
    deletes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    managed: tuple[tuple[str, str], ...] = ()  # (name, subject) amlwire manages for this compute
    satisfied: dict[str, str] = field(default_factory=dict)  # subject -> credential name that federates it
    budget: Budget = field(default_factory=lambda: Budget(0, 1))  # once the plan is carried out


def _diff(found: FederatedCredential, issuer: str, subject: str) -> tuple[str, str]:
    if found.issuer != issuer:
        return (
            r.FEDERATED_CREDENTIAL_ISSUER_MISMATCH,
            f"its issuer was {found.issuer!r}, the cluster's is {issuer!r}: {_issuer_near_miss(issuer, found.issuer)}, "
            f"and Entra matches issuers exactly and case-sensitively",
        )
    if found.audiences != (AUDIENCE,):
        return r.FEDERATED_CREDENTIAL_AUDIENCE_MISMATCH, f"its audiences were {list(found.audiences)}"
    return r.FEDERATED_CREDENTIAL_SUBJECT_MISMATCH, f"its subject was {found.subject!r}"


def _cli(identity_name: str, identity_group: str) -> dict[str, str]:
    """The identity's name and group for a fix command, when known (else placeholders)."""
    return {k: v for k, v in (("identity", identity_name), ("group", identity_group)) if v and v != "the identity"}


def _issuer_near_miss(issuer: str, other: str) -> str:
    if other.rstrip("/") == issuer.rstrip("/"):
        return "only the trailing '/' differs"
    if other.lower() == issuer.lower():
        return "only the letter case differs"
    return "it is another issuer"


def plan_federation(
    service_accounts: Sequence[tuple[str, str]],
    issuer: str,
    existing: Iterable[FederatedCredential],
    previously_managed: Iterable[str] = (),
    wanted_elsewhere: Iterable[tuple[str, str]] = (),
    identity_name: str = "the identity",
    identity_group: str = "",
    per_cluster: int | None = None,
    cluster: str = "",
) -> FederationPlan:
    """Plan the credentials so that every service account federates with the cluster's exact issuer.

    `per_cluster` is how many credentials a cluster like this one needs (its spec's service accounts, also those
    not planned now); the budget counts how many more such clusters the identity can take.

    Credentials are named for `cluster`; one amlwire named before names held the cluster is kept under its name.
    Credentials amlwire did not create are never written or deleted; one that already federates a
    subject counts as present. `wanted_elsewhere` holds (issuer, subject) pairs other AttachedComputes
    sharing the identity still need, so a shared credential is not deleted under them.
    """
    existing = list(existing)
    by_name = {c.name: c for c in existing}
    writes: list[Write] = []
    problems: list[Problem] = []
    notes: list[str] = []
    managed: list[tuple[str, str]] = []
    satisfied: dict[str, str] = {}
    for namespace, account in service_accounts:
        subject = subject_of(namespace, account)
        name = credential_name(namespace, account, issuer, cluster)
        if name not in by_name and (legacy := credential_name(namespace, account, issuer)) in by_name:
            name = legacy
        managed.append((name, subject))
        ours = by_name.get(name)
        if ours is not None:
            if ours.federates(issuer, subject):
                satisfied[subject] = name
            else:
                reason, detail = _diff(ours, issuer, subject)
                writes.append(Write(FederatedCredential(name, issuer, subject), reason, f"corrected {name} ({detail})"))
            continue
        present = next((c for c in existing if c.federates(issuer, subject)), None)
        if present is not None:
            satisfied[subject] = present.name
            continue
        clash = next((c for c in existing if c.issuer == issuer and c.subject == subject), None)
        if clash is not None:
            problems.append(
                Problem(
                    r.FEDERATED_CREDENTIAL_AUDIENCE_MISMATCH,
                    f"federated credential {clash.name!r} on {identity_name} (not created by amlwire) federates "
                    f"{subject} with audiences {list(clash.audiences)}; Entra needs exactly [{AUDIENCE!r}] and Azure "
                    f"allows one credential per issuer and subject. Fix its audience or delete it: "
                    + BY_ID["F06"].command("delete", **_cli(identity_name, identity_group), name=clash.name),
                )
            )
            continue
        # another cluster's amlwire credentials federate the same subject with their own issuer: not a near miss
        near = [
            c for c in existing if c.subject == subject and c.issuer != issuer and not c.name.startswith(NAME_PREFIX)
        ]
        if near:
            miss = near[0]
            notes.append(
                f"federated credential {miss.name!r} (not created by amlwire) has issuer {miss.issuer!r} for "
                f"{subject} but the cluster's issuer is {issuer!r} ({_issuer_near_miss(issuer, miss.issuer)}); "
                f"Entra matches issuers exactly, so it never worked (AADSTS70021). amlwire created {name} with the "
                f"exact issuer; delete {miss.name!r} when convenient."
            )
            writes.append(
                Write(
                    FederatedCredential(name, issuer, subject),
                    r.FEDERATED_CREDENTIAL_ISSUER_MISMATCH,
                    f"created {name} with the cluster's exact issuer",
                )
            )
        else:
            writes.append(
                Write(
                    FederatedCredential(name, issuer, subject),
                    r.FEDERATED_CREDENTIAL_MISSING,
                    f"created {name} ({subject} had no federated credential)",
                )
            )

    wanted = {n for n, _ in managed}
    elsewhere = set(wanted_elsewhere)
    ours_here = {c.name for c in existing if c.name.startswith(NAME_PREFIX) and c.issuer == issuer}
    candidates = (set(previously_managed) | ours_here) - wanted - set(satisfied.values())
    deletes = sorted(
        name
        for name in candidates
        if name in by_name and (by_name[name].issuer, by_name[name].subject) not in elsewhere
    )

    creates = [w for w in writes if w.credential.name not in by_name]
    after = len(existing) - len(deletes) + len(creates)
    per_cluster = max(1, per_cluster if per_cluster is not None else len(service_accounts))
    if after > FIC_LIMIT:
        foreign = sum(1 for c in existing if not c.name.startswith(NAME_PREFIX))
        missing = ", ".join(w.credential.subject for w in creates)
        problems.append(
            Problem(
                r.FEDERATED_CREDENTIAL_LIMIT,
                f"{identity_name} has {len(existing)} federated credentials ({foreign} not created by amlwire) and "
                f"Azure allows {FIC_LIMIT} per identity: at {per_cluster} per cluster, one identity serves at most "
                f"{FIC_LIMIT // per_cluster} clusters. amlwire needs {len(creates)} more ({missing}) and wrote "
                f"none; it never deletes a credential it did not create to make room. Use another identity for this "
                f"and the next clusters (spec.identity.resourceId), or delete credentials no longer used "
                f"({BY_ID['F07'].fix(**_cli(identity_name, identity_group))}).",
            )
        )
        writes = [w for w in writes if w.credential.name in by_name]
        after = len(existing) - len(deletes)
    return FederationPlan(
        issuer,
        tuple(writes),
        tuple(deletes),
        tuple(problems),
        tuple(notes),
        tuple(managed),
        satisfied,
        Budget(after, per_cluster),
    )


@dataclass(frozen=True)
class OtherCluster:
    """Another cluster on which amlwire federates the identity, known from Azure: the issuer its credentials
    name, and what that issuer answers (a cluster that is gone no longer publishes its keys)."""

    issuer: str
    credentials: tuple[str, ...]
    answer: IssuerAnswer

    @property
    def gone(self) -> bool:
        return self.answer.state == "gone"


def issuers_elsewhere(credentials: Iterable[FederatedCredential], issuer: str | None) -> dict[str, tuple[str, ...]]:
    """amlwire's credentials on the identity for issuers other than this cluster's, by issuer."""
    found: dict[str, list[str]] = {}
    for c in credentials:
        if c.name.startswith(NAME_PREFIX) and c.issuer != issuer:
            found.setdefault(c.issuer, []).append(c.name)
    return {i: tuple(sorted(names)) for i, names in sorted(found.items())}


def describe_holding(others: Sequence[OtherCluster]) -> str:
    """The other clusters that may still use the identity: their issuer publishes keys, or could not be asked."""
    return "; ".join(
        f"issuer {o.issuer} ({len(o.credentials)} credential(s); {o.answer.detail})" for o in others if not o.gone
    )


def describe_gone(other: OtherCluster, identity_name: str, identity_group: str = "") -> str:
    """A cluster that is gone and what it left on the identity, with the commands that remove it: amlwire never
    deletes what another cluster made on a guess."""
    commands = " && ".join(
        BY_ID["F07"].command("delete", **_cli(identity_name, identity_group), name=n) for n in other.credentials
    )
    return (
        f"the cluster of issuer {other.issuer} is gone ({other.answer.detail}; Entra can no longer verify its "
        f"tokens) but its credentials {', '.join(other.credentials)} remain on {identity_name}, counting toward the "
        f"{FIC_LIMIT}-credential cap. amlwire leaves what another cluster made; if that cluster is gone for good, "
        f"delete them: {commands}"
    )
