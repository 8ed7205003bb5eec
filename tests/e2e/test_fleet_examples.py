"""examples/fleet: what each fleet tool would render, per cluster, is a valid AttachedCompute (the apiserver's
schema and admission rules, as a dry run) with its own cluster and compute. The tools' own kinds are checked for
what amlwire's part of them needs; their schemas are not available offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

pytestmark = [pytest.mark.kube]
FLEET = REPO / "examples" / "fleet"
GO_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FLEET / name).read_text()) if d]


def json_patch(manifest: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON patch operations the examples use (replace) on a copy of `manifest`."""
    patched = yaml.safe_load(yaml.safe_dump(manifest))
    for operation in operations:
        assert operation["op"] == "replace", operation
        *parents, leaf = operation["path"].strip("/").split("/")
        node = patched
        for part in parents:
            node = node[part]
        assert leaf in node, f"{operation['path']} is not in the compute"
        node[leaf] = operation["value"]
    return patched


def kustomize(path: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
    """What kustomize builds from `path` with patches (target by kind and name): the one AttachedCompute."""
    folder = REPO / path.removeprefix("./")
    resources = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    [compute] = [yaml.safe_load((folder / r).read_text()) for r in resources]
    for patch in patches:
        target = patch["target"]
        if (target["kind"], target["name"]) == (compute["kind"], compute["metadata"]["name"]):
            compute = json_patch(compute, yaml.safe_load(patch["patch"]))
    return compute


def admitted(custom, manifest: dict[str, Any]) -> tuple[str, str]:
    custom.create_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes", manifest, dry_run="All")
    return manifest["spec"]["cluster"]["name"], manifest["spec"]["compute"]["name"]


def test_the_argocd_applicationset_gives_each_cluster_the_chart_and_its_own_compute(custom):
    [appset] = documents("applicationset.yaml")
    elements = appset["spec"]["generators"][0]["list"]["elements"]
    template = yaml.safe_dump(appset["spec"]["template"])
    assert set(GO_FIELD.findall(template)) <= set(elements[0]), "a template field no element gives"
    rendered = []
    for element in elements:
        application = yaml.safe_load(GO_FIELD.sub(lambda m, e=element: str(e[m.group(1)]), template))
        assert application["spec"]["destination"]["server"] == element["server"]
        chart, compute = application["spec"]["sources"]
        assert (REPO / chart["path"] / "Chart.yaml").is_file()
        rendered.append(admitted(custom, kustomize(compute["path"], compute["kustomize"]["patches"])))
    assert rendered == [(e["cluster"], e["compute"]) for e in elements]


def test_each_clusters_flux_kustomization_applies_its_own_compute(custom):
    sources = {d["metadata"]["name"] for d in documents("../flux/helmrelease.yaml") if d["kind"] == "GitRepository"}
    rendered = []
    for kustomization in documents("flux-clusters.yaml"):
        assert kustomization["spec"]["sourceRef"]["name"] in sources
        cluster, compute = admitted(custom, kustomize(kustomization["spec"]["path"], kustomization["spec"]["patches"]))
        assert cluster == kustomization["metadata"]["labels"]["amlwire.io/cluster"]
        rendered.append((cluster, compute))
    assert len(set(rendered)) == len(rendered) == 2


def test_fleet_manager_places_the_crds_and_each_member_names_its_own_cluster(custom):
    placement, override = documents("fleet-manager.yaml")
    crds = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in (REPO / "crds").glob("*.amlwire.io.yaml")}
    selected = {s["name"] for s in placement["spec"]["resourceSelectors"] if s["kind"] == "CustomResourceDefinition"}
    assert selected == crds
    base = kustomize("examples/fleet/compute", [])
    assert {"kind": "AttachedCompute", "name": base["metadata"]["name"]}.items() <= next(
        s for s in placement["spec"]["resourceSelectors"] if s["kind"] == "AttachedCompute"
    ).items()
    [rule] = override["spec"]["policy"]["overrideRules"]
    rendered = []
    for member in ("aks-west", "aks-east"):
        operations = yaml.safe_load(
            yaml.safe_dump(rule["jsonPatchOverrides"]).replace("${MEMBER-CLUSTER-NAME}", member)
        )
        rendered.append(admitted(custom, json_patch(base, operations)))
    assert rendered == [("aks-west", "k8s-aks-west"), ("aks-east", "k8s-aks-east")]


def test_a_compute_name_longer_than_aml_allows_is_refused_before_it_reaches_azure(custom):
    from kubernetes.client import ApiException

    too_long = json_patch(
        kustomize("examples/fleet/compute", []),
        [{"op": "replace", "path": "/spec/compute/name", "value": "k8s-aks-robotics-west"}],
    )
    with pytest.raises(ApiException) as refused:
        admitted(custom, too_long)
    assert "spec.compute.name" in refused.value.body


def test_the_examples_are_all_checked():
    checked = {"applicationset.yaml", "flux-clusters.yaml", "fleet-manager.yaml", "compute"}
    assert {p.name for p in FLEET.iterdir()} == checked
