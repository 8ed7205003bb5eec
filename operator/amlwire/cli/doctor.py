"""`amlwire doctor`: read-only diagnosis of one AttachedCompute's wiring, F01-F23, with the fixes."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.config import Settings
from amlwire.domain.doctor import Result, diagnose, exit_code

SCHEMA = "amlwire.io/doctor/v1"
STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


class CannotRun(click.ClickException):
    exit_code = 2


def spec_from_flags(values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "workspace": {
            "subscriptionId": values["subscription"],
            "resourceGroup": values["workspace_group"],
            "name": values["workspace"],
        },
        "cluster": {
            "resourceGroup": values["cluster_group"],
            "name": values["cluster"],
            **({"subscriptionId": values["cluster_subscription"]} if values["cluster_subscription"] else {}),
        },
        "identity": {"resourceId": values["identity"]},
        "compute": {"name": values["compute"], "namespace": values["compute_namespace"]},
    }
    if values["service_account"]:
        spec["serviceAccounts"] = [
            {"namespace": sa.split("/", 1)[0], "name": sa.split("/", 1)[1]} for sa in values["service_account"]
        ]
    if values["grant"]:
        spec["access"] = {
            "grants": [{"scope": g.rsplit("=", 1)[0], "role": g.rsplit("=", 1)[1]} for g in values["grant"]]
        }
    return spec


def load_target(
    name: str | None, manifest: Path | None, values: dict[str, Any], kube: Any
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The spec to diagnose and, for a live AttachedCompute, its name."""
    if manifest is not None:
        documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
        found = [d for d in documents if d.get("kind") == "AttachedCompute"]
        if not found:
            raise CannotRun(f"{manifest} holds no AttachedCompute")
        return found[0]["spec"], None
    if name is not None:
        if kube is None:
            raise CannotRun(f"reading AttachedCompute {name} needs Kubernetes access (kubeconfig or in-cluster)")
        obj = kube.get_attached_compute(name)
        if obj is None:
            raise CannotRun(f"AttachedCompute {name} does not exist (kubectl get amlc)")
        return obj["spec"], (name, obj["metadata"]["uid"])
    missing = [
        f"--{k.replace('_', '-')}"
        for k in ("subscription", "workspace_group", "workspace", "cluster_group", "cluster", "identity", "compute")
        if not values[k]
    ]
    if missing:
        raise CannotRun("name an AttachedCompute, pass -f FILE, or give the flags " + ", ".join(missing))
    return spec_from_flags(values), None


def report_json(results: list[Result], spec: AttachedComputeSpec, name: str | None) -> str:
    """The JSON report (schema: README, section "amlwire doctor")."""
    summary = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "warn", "skip")}
    return json.dumps(
        {
            "schemaVersion": SCHEMA,
            "target": {
                "attachedCompute": name,
                "workspace": spec.workspace.name,
                "cluster": spec.cluster.name,
                "identity": spec.identity.resource_id,
                "compute": spec.compute.name,
            },
            "results": [r.as_dict() for r in results],
            "summary": summary,
            "exitCode": exit_code(results),
        },
        indent=2,
    )


def report_table(console: Console, results: list[Result], spec: AttachedComputeSpec, name: str | None) -> None:
    title = f"amlwire doctor: {name or spec.compute.name} ({spec.cluster.name} → {spec.workspace.name})"
    table = Table(title=title, show_lines=True)
    for column in ("id", "status", "check", "evidence", "fix"):
        table.add_column(column, overflow="fold")
    for r in results:
        evidence = "\n".join(f"{k}: {v}" for k, v in r.evidence.items()) or r.why
        table.add_row(r.id, f"[{STYLE[r.status]}]{r.status}[/]", r.title, evidence, r.fix)
    console.print(table)
    failed = [r.id for r in results if r.status == "fail"]
    console.print(f"[bold red]{len(failed)} failing: {', '.join(failed)}[/]" if failed else "[green]no failures[/]")


def kube_client(settings: Settings) -> tuple[Any, str | None]:
    from amlwire.adapters.kube.adapter import KubeAdapter
    from amlwire.adapters.kube.client import api_client, load_configuration

    try:
        return KubeAdapter(api_client(load_configuration(settings.kubeconfig))), None
    except Exception as error:
        return None, f"no Kubernetes access ({type(error).__name__}: {error})"


@click.command()
@click.argument("name", required=False)
@click.option(
    "-f",
    "--file",
    "manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An AttachedCompute manifest to diagnose (need not be applied).",
)
@click.option("--subscription", help="Workspace subscription ID.")
@click.option("--workspace-group", help="Workspace resource group.")
@click.option("--workspace", help="AML workspace name.")
@click.option("--cluster-subscription", help="AKS subscription ID (default: the workspace's).")
@click.option("--cluster-group", help="AKS resource group.")
@click.option("--cluster", help="AKS cluster name.")
@click.option("--identity", help="User-assigned identity resource ID.")
@click.option("--service-account", multiple=True, help="NAMESPACE/NAME federated to the identity (repeatable).")
@click.option("--compute", help="AML compute name.")
@click.option("--compute-namespace", default="default", show_default=True, help="Namespace AML job pods run in.")
@click.option("--grant", multiple=True, help="SCOPE=ROLE the identity needs (repeatable).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def doctor(name: str | None, manifest: Path | None, output: str, **values: Any) -> None:
    """Diagnose the wiring of an AttachedCompute (read-only): every field failure F01-F23, evidence and fix.

    Exit code 0: nothing fails; 1: something fails; 2: the doctor could not run (credentials, network, a
    target that does not exist). Azure and Kubernetes settings are the operator's (AMLWIRE_* variables).
    """
    from amlwire.adapters.azure.adapter import AzureAdapter
    from amlwire.adapters.azure.clients import AzureClients
    from amlwire.reconcile.doctor import DoctorCannotRun, gather

    settings = Settings()
    kube, kube_problem = kube_client(settings)
    raw, live = load_target(name, manifest, values, kube)
    try:
        spec = AttachedComputeSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise CannotRun(f"the AttachedCompute spec is not valid: {problems}") from error
    azure = AzureAdapter(AzureClients(settings))
    try:
        facts = gather(
            spec,
            azure,
            kube,
            datetime.now(UTC),
            timedelta(seconds=settings.role_propagation_seconds),
            live,
            kube_problem,
        )
    except DoctorCannotRun as error:
        raise CannotRun(str(error)) from error
    results = diagnose(facts)
    label = live[0] if live else None
    if output == "json":
        click.echo(report_json(results, spec, label))
    else:
        report_table(Console(width=max(120, Console().width)), results, spec, label)
    sys.exit(exit_code(results))
