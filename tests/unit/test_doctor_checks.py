"""The doctor's checks on facts (no I/O): a healthy world passes every check; each field failure alone fails
exactly its check, with a fix that names the real resources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.domain.access import role_definition_id
from amlwire.domain.azure import ComputeInfo, ExtensionInfo, FederatedCredential, RoleAssignment
from amlwire.domain.doctor import CHECKS, Facts, Pod, diagnose, exit_code
from amlwire.domain.extension import cli_settings
from amlwire.domain.federation import credential_name
from tests import fakes as ids
from tests.conftest import example, table
from tests.fakes import at, healthy_azure

WORKSPACE_PRINCIPAL = "9a0c7a52-0000-4000-8000-00000000aa01"


def spec() -> AttachedComputeSpec:
    return AttachedComputeSpec.model_validate(example("attachedcompute.yaml"))


def healthy() -> Facts:
    azure = healthy_azure()
    s = spec()
    facts = Facts(spec=s, now=at(), role_propagation=timedelta(minutes=10))
    facts.cluster = azure.clusters[ids.CLUSTER_ID.lower()]
    facts.identity = azure.identities[ids.IDENTITY_ID.lower()]
    facts.credentials = [
        FederatedCredential(
            credential_name(a.namespace, a.name, ids.ISSUER),
            ids.ISSUER,
            f"system:serviceaccount:{a.namespace}:{a.name}",
        )
        for a in s.service_accounts
    ]
    facts.service_accounts = {
        (a.namespace, a.name): {"azure.workload.identity/client-id": ids.CLIENT_ID} for a in s.service_accounts
    }
    facts.pods = [
        Pod("job", {"azure.workload.identity/use": "true"}, ("AZURE_FEDERATED_TOKEN_FILE",), ("azure-identity-token",))
    ]
    facts.extension = ExtensionInfo(
        "ext",
        "Microsoft.AzureML.Kubernetes",
        "Succeeded",
        {
            **cli_settings(ids.CLUSTER_ID, "aks-robotics", "eastus", None),  # installed as az k8s-extension create does
            "enableTraining": "True",
            "identityType": "UserAssigned",
            "userAssignedIdentityResourceId": ids.IDENTITY_ID,
        },
    )
    facts.compute = ComputeInfo(
        f"{ids.WORKSPACE.id}/computes/k8s-gpu",
        "Succeeded",
        ids.CLUSTER_ID,
        "azureml-jobs",
        "UserAssigned",
        (ids.IDENTITY_ID,),
    )
    facts.workspace = replace(azure.workspaces[ids.WORKSPACE.id.lower()], identity_principal_id=WORKSPACE_PRINCIPAL)
    facts.storage = azure.storage[ids.STORAGE_ID.lower()]
    old = at(-60)
    facts.identity_roles = {
        ids.STORAGE_ID: [
            RoleAssignment(
                "a", ids.STORAGE_ID, role_definition_id(ids.SUB, "Storage Blob Data Contributor"), ids.PRINCIPAL, old
            )
        ],
        ids.REGISTRY_ID: [
            RoleAssignment("b", ids.REGISTRY_ID, role_definition_id(ids.SUB, "AcrPull"), ids.PRINCIPAL, old)
        ],
        ids.WORKSPACE.id: [
            RoleAssignment(
                "d", ids.WORKSPACE.id, role_definition_id(ids.SUB, "AzureML Data Scientist"), ids.PRINCIPAL, old
            )
        ],
    }
    facts.workspace_roles = [
        RoleAssignment("c", ids.CLUSTER_ID, role_definition_id(ids.SUB, "Reader"), WORKSPACE_PRINCIPAL)
    ]
    facts.write_conflicts = []
    facts.sidecar_sources = ["1 AmlJob(s) on robotics-gpu"]
    return facts


def break_cluster(**changes: Any) -> Callable[[Facts], None]:
    def apply(facts: Facts) -> None:
        assert facts.cluster is not None
        facts.cluster = replace(facts.cluster, **changes)

    return apply


def setter(**fields: object) -> Callable[[Facts], None]:
    def apply(facts: Facts) -> None:
        for name, value in fields.items():
            setattr(facts, name, value)

    return apply


def _credential(**changes: object) -> Callable[[Facts], None]:
    def apply(facts: Facts) -> None:
        facts.credentials = [replace(facts.credentials[0], **changes), *facts.credentials[1:]]  # type: ignore[arg-type]

    return apply


def _young_role(facts: Facts) -> None:
    facts.identity_roles[ids.STORAGE_ID] = [replace(facts.identity_roles[ids.STORAGE_ID][0], created_on=at(-1))]


def _annotation(facts: Facts) -> None:
    facts.service_accounts[("azureml", "training")] = {"azure.workload.identity/client-id": "wrong"}


CASES = [
    # (failure, how the world is broken, what the fix names)
    (
        "F01",
        break_cluster(oidc_issuer_enabled=False, issuer_url=None),
        "az aks update -g rg-aks -n aks-robotics --enable-oidc-issuer",
    ),
    ("F02", break_cluster(workload_identity_enabled=False), "--enable-workload-identity"),
    ("F03", setter(identity=None), "az identity create -g rg-id -n id-ml"),
    (
        "F04",
        lambda f: setattr(f, "credentials", f.credentials[1:]),
        "az identity federated-credential create --identity-name id-ml -g rg-id",
    ),
    ("F05", _credential(issuer=ids.ISSUER.rstrip("/")), f"--issuer {ids.ISSUER}"),
    ("F06", _credential(audiences=("api://Other",)), "--audiences api://AzureADTokenExchange"),
    ("F08", setter(write_conflicts=["409 at 10:00"]), "serialize"),
    ("F09", lambda f: f.service_accounts.update({("azureml", "training"): None}), "amlwire creates azureml/training"),
    ("F10", _annotation, "kubectl annotate serviceaccount -n azureml training"),
    ("F11", setter(pods=[Pod("job", {}, (), ())]), 'azure.workload.identity/use: "true"'),
    ("F12", setter(extension=None), "az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes"),
    (
        "F13",
        lambda f: setattr(f, "extension", replace(f.extension, settings={"enableTraining": "True"})),
        "userAssignedIdentityResourceId=" + ids.IDENTITY_ID,
    ),
    ("F14", setter(compute=None), "az ml compute attach --type Kubernetes --name k8s-gpu"),
    ("F15", lambda f: f.identity_roles.update({ids.STORAGE_ID: []}), f"--scope {ids.STORAGE_ID}"),
    ("F16", _young_role, "retry after 2026-11-26T10:09:00Z"),
    (
        "F17",
        lambda f: setattr(f, "workspace", replace(f.workspace, system_datastores_auth_mode="accesskey")),
        "a new workspace",
    ),
    ("F18", setter(workspace_roles=[]), f"--scope {ids.CLUSTER_ID}"),
    ("F19", break_cluster(local_accounts_disabled=True), "--enable-local-accounts"),
    ("F23", setter(sidecar_evidence=["failed to load certificate x.pfx"]), "InContainer"),
]


def test_a_healthy_world_passes_every_check():
    results = diagnose(healthy())
    assert [(x.id, x.status) for x in results if x.status != "pass"] == []
    assert exit_code(results) == 0
    assert [x.id for x in results] == sorted(c.failure for c in CHECKS)


@table(("failure", "breaks", "names"), CASES)
def test_each_failure_alone_fails_exactly_its_check(failure, breaks, names):
    facts = healthy()
    breaks(facts)
    results = diagnose(facts)
    failing = [x for x in results if x.status == "fail"]
    assert [x.id for x in failing] == [failure], [(x.id, x.status, x.evidence) for x in results if x.status != "pass"]
    assert names in failing[0].fix
    assert failing[0].check == next(c.name for c in CHECKS if c.failure == failure)


def test_checks_are_named_for_what_they_detect():
    names = {c.failure: c.name for c in CHECKS}
    assert names["F04"] == "federated_credential_missing"
    assert all(not n.startswith("check_") for n in names.values())


def test_fixes_fit_the_spec():
    facts = healthy()
    facts.extension = None  # Configure mode: no advice to set it
    (f12,) = [x for x in diagnose(facts) if x.id == "F12"]
    assert "spec.extension.mode: Configure" not in f12.fix


def test_what_cannot_be_read_is_skipped_with_why():
    facts = healthy()
    facts.unreadable["pods"] = "forbidden"
    (f11,) = [x for x in diagnose(facts) if x.id == "F11"]
    assert (f11.status, f11.why) == ("skip", "could not read pods: forbidden")
