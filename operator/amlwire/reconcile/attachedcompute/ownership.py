"""Who owns the cluster's shared pieces: the AzureML extension's identity, and each service account's.

One extension serves one identity and a service account carries one client ID, so an AttachedCompute with
another identity is refused them. A refused compute writes no trust either: no federated credential for an
account annotated for another identity, none at all (and no role) while the extension serves another one.
"""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.domain.azure import name_of
from amlwire.domain.conditions import StepResult
from amlwire.domain.view import ComputeView, extension_owner
from amlwire.reconcile.attachedcompute.scope import Scope


def extension_held_by(scope: Scope) -> ComputeView | None:
    """The AttachedCompute whose identity the cluster's extension serves, when this one would set another."""
    if scope.spec.extension.mode != "Configure":
        return None
    target = scope.target
    return extension_owner(
        scope.name,
        target.identity_id,
        scope.created,
        bool(scope.previous.owns_extension),
        scope.neighbours.siblings(target.cluster_id),
        scope.spec.extension.name,
    )


def extension_refused(scope: Scope, condition: str) -> StepResult | None:
    """`condition` blocked, saying why, while the extension serves another AttachedCompute's identity."""
    owner = extension_held_by(scope)
    if owner is None:
        return None
    target = scope.target
    return scope.blocked(
        condition,
        r.EXTENSION_OWNED_BY_ANOTHER,
        f"the AzureML extension {scope.spec.extension.name} on cluster {target.cluster_name} is configured for "
        f"AttachedCompute {owner.name} and its identity {name_of(owner.identity_id)}; one extension serves one "
        f"identity, so this compute writes no federated credential, role or extension setting. Use the same "
        f"spec.identity as {owner.name} (AttachedComputes may share an identity), set spec.extension.mode: Verify, "
        f"or attach another cluster",
    )


def annotated_for_another_identity(scope: Scope, subject: str) -> str | None:
    """Another AttachedCompute that annotated this service account for another identity (it can carry one)."""
    return next(
        (
            other.name
            for other in scope.neighbours.others
            if subject in other.subjects
            and not other.uses_identity(scope.target.identity_id)
            and other.state(r.SERVICE_ACCOUNTS_READY) == "True"
        ),
        None,
    )


def owned_elsewhere(namespace: str, name: str, holder: str) -> str:
    return (
        f"service account {namespace}/{name} carries the client ID of AttachedCompute {holder}'s identity; a "
        f"service account federates one identity. Use the same spec.identity as {holder}, or other service "
        f"accounts"
    )
