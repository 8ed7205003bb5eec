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
from amlwire.cli.settings import kubectl_flags, load_settings
from amlwire.config import Settings
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.datapath import JOB_IDENTITIES, diagnose_data_path
from amlwire.domain.doctor import Result, diagnose, exit_code
from amlwire.domain.errors import KubeError
from amlwire.domain.failures import DATA_PATH_CHAIN, WIRING_CHAIN, Chain

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
        try:
            obj = kube.get_attached_compute(name)
        except KubeError as error:
            raise CannotRun(f"cannot read AttachedCompute {name}: {error}") from error
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


def attached_compute_target(spec: AttachedComputeSpec, name: str | None) -> dict[str, str | None]:
    return {
        "attachedCompute": name,
        "workspace": spec.workspace.name,
        "cluster": spec.cluster.name,
        "identity": spec.identity.resource_id,
        "compute": spec.compute.name,
    }


def report_json(results: list[Result], target: dict[str, str | None]) -> str:
    """The JSON report (schema: README, section "amlwire doctor")."""
    summary = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "warn", "skip")}
    return json.dumps(
        {
            "schemaVersion": SCHEMA,
            "target": target,
            "results": [r.as_dict() for r in results],
            "summary": summary,
            "exitCode": exit_code(results),
        },
        indent=2,
    )


MARK = {"pass": "[green]✓[/]", "fail": "[bold red]✗[/]", "warn": "[yellow]![/]", "skip": "[dim]·[/]"}


def _link_status(results: dict[str, Result], failures: tuple[tuple[str, str], ...]) -> str:
    statuses = {results[f].status for f, _ in failures if f in results}
    for status in ("fail", "warn", "pass"):
        if status in statuses:
            return status
    return "skip"


def _evidence(result: Result) -> str:
    return "; ".join(f"{k}: {v}" for k, v in result.evidence.items()) or result.why


def report_table(
    console: Console, results: list[Result], heading: str, chain: Chain = WIRING_CHAIN, verbose: bool = False
) -> None:
    """The wiring as the chain it is, failures first with their fix printed whole (to copy), passes folded."""
    by_id = {r.id: r for r in results}
    verifies = {failure: name for _, checks in chain for failure, name in checks}
    console.print(f"[bold]amlwire doctor: {heading}[/]", highlight=False)
    console.print(" → ".join(f"{link} {MARK[_link_status(by_id, checks)]}" for link, checks in chain))
    for status in ("fail", "warn"):
        for r in (r for r in results if r.status == status):
            if r.headline:
                console.print(f"\n{MARK[status]} {r.id} [bold]{r.title}[/]: ", end="")
                console.print(r.headline, soft_wrap=True, highlight=False, markup=False)
            else:
                console.print(f"\n{MARK[status]} {r.id} {verifies.get(r.id, r.title)}: [bold]{r.title}[/]")
            if evidence := _evidence(r):
                console.print(f"  evidence: {evidence}", soft_wrap=True, highlight=False, markup=False)
            if r.fix:
                console.print("  fix:")
                console.print(r.fix, soft_wrap=True, highlight=False, markup=False)  # unwrapped: copy and paste
    rest = [r for r in results if r.status in ("pass", "skip")]
    if verbose:
        table = Table(show_header=True, box=None, padding=(0, 1))
        for column in ("", "id", "verified", "evidence"):
            table.add_column(column, overflow="fold")
        for r in rest:
            table.add_row(MARK[r.status], r.id, verifies.get(r.id, r.title), _evidence(r))
        console.print()
        console.print(table)
    else:
        passed = sum(1 for r in rest if r.status == "pass")
        skipped = len(rest) - passed
        console.print(f"\n{passed} checks passed" + (f", {skipped} skipped" if skipped else "") + " (-v lists them)")
    failed = [r.id for r in results if r.status == "fail"]
    console.print(f"[bold red]{len(failed)} failing: {', '.join(failed)}[/]" if failed else "[green]no failures[/]")


def kube_client(settings: Settings, context: str | None = None) -> tuple[Any, str | None]:
    from amlwire.adapters.kube.adapter import KubeAdapter
    from amlwire.adapters.kube.client import api_client, load_configuration

    try:
        return KubeAdapter(api_client(load_configuration(settings.kubeconfig, context=context))), None
    except Exception as error:
        return None, f"no Kubernetes access ({type(error).__name__}: {error})"


def attached_compute_heading(spec: AttachedComputeSpec, name: str | None) -> str:
    return f"{name or spec.compute.name} ({spec.cluster.name} → {spec.workspace.name})"


def wants_data_path(name: str | None, manifest: Path | None, values: dict[str, Any]) -> bool:
    """A job's data path, rather than an AttachedCompute's wiring: a job, a job setting, or a compute alone."""
    if values["job"] or values["job_identity"] or values["user"] or values["datastore"]:
        return True
    wiring = name or manifest or values["cluster"] or values["identity"]
    return bool(not wiring and values["workspace"] and values["compute"])


@click.command()
@click.argument("name", required=False)
@click.option(
    "-f",
    "--file",
    "manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An AttachedCompute manifest to diagnose (need not be applied).",
)
@click.option("--subscription", envvar="AZURE_SUBSCRIPTION_ID", help="Workspace subscription ID.")
@click.option("--workspace-group", help="Workspace resource group.")
@click.option("--workspace", help="AML workspace name.")
@click.option("--cluster-subscription", help="AKS subscription ID (default: the workspace's).")
@click.option("--cluster-group", help="AKS resource group.")
@click.option("--cluster", help="AKS cluster name.")
@click.option("--identity", help="User-assigned identity resource ID.")
@click.option("--service-account", multiple=True, help="NAMESPACE/NAME federated to the identity (repeatable).")
@click.option("--compute", help="AML compute name (any type), or serverless.")
@click.option("--compute-namespace", default="default", show_default=True, help="Namespace AML job pods run in.")
@click.option("--grant", multiple=True, help="SCOPE=ROLE the identity needs (repeatable).")
@click.option("--job", help="A submitted AML job: diagnose the data path of its compute, identity and datastores.")
@click.option(
    "--job-identity",
    type=click.Choice(JOB_IDENTITIES),
    help="The job's identity setting (managed, user, aml-token: none set). Default: the job's, or aml-token.",
)
@click.option("--user", help="Object ID of the user who submits the job (identity user, credential datastores).")
@click.option("--datastore", multiple=True, help="A datastore the job reads (repeatable; default: the default one).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="List the checks that passed too.")
@kubectl_flags
def doctor(
    name: str | None,
    manifest: Path | None,
    output: str,
    verbose: bool,
    kubeconfig: Path | None,
    kube_context: str | None,
    kube_namespace: str | None,
    **values: Any,
) -> None:
    """Diagnose the wiring of an AttachedCompute, or a job's data path on any compute (read-only).

    \b
    amlwire doctor NAME | -f FILE | --cluster ... --identity ...   the Kubernetes wiring, F01-F23
    amlwire doctor --workspace-group G --workspace W --compute C [--job-identity managed|user|aml-token]
                   [--user OBJECT_ID] [--datastore NAME]            a job's data path, F16 F17 F24-F29
    amlwire doctor --workspace-group G --workspace W --job NAME      the data path of a submitted job

    Exit code 0: nothing fails; 1: something fails; 2: the doctor could not run (credentials, network, a
    target that does not exist). Azure and Kubernetes settings are the operator's (AMLWIRE_* variables).
    """
    from amlwire.adapters.azure.adapter import AzureAdapter
    from amlwire.adapters.azure.clients import AzureClients
    from amlwire.reconcile.doctor import DoctorCannotRun

    settings = load_settings()
    if kubeconfig is not None:
        settings = settings.model_copy(update={"kubeconfig": kubeconfig})
    values["kube_context"] = kube_context
    window = timedelta(seconds=settings.role_propagation_seconds)
    try:
        if wants_data_path(name, manifest, values):
            results, target, heading, chain = _data_path(values, AzureAdapter(AzureClients(settings)), window)
        else:
            results, target, heading, chain = _wiring(name, manifest, values, settings, window)
    except DoctorCannotRun as error:
        raise CannotRun(str(error)) from error
    if output == "json":
        click.echo(report_json(results, target))
    else:
        report_table(Console(width=max(120, Console().width)), results, heading, chain, verbose)
    sys.exit(exit_code(results))


Report = tuple[list[Result], dict[str, str | None], str, Chain]


def _wiring(
    name: str | None, manifest: Path | None, values: dict[str, Any], settings: Settings, window: timedelta
) -> Report:
    from amlwire.adapters.azure.adapter import AzureAdapter
    from amlwire.adapters.azure.clients import AzureClients
    from amlwire.reconcile.doctor import gather

    kube, kube_problem = kube_client(settings, values.get("kube_context"))
    raw, live = load_target(name, manifest, values, kube)
    try:
        spec = AttachedComputeSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise CannotRun(f"the AttachedCompute spec is not valid: {problems}") from error
    azure = AzureAdapter(AzureClients(settings))
    facts = gather(spec, azure, kube, datetime.now(UTC), window, live, kube_problem)
    label = live[0] if live else None
    return diagnose(facts), attached_compute_target(spec, label), attached_compute_heading(spec, label), WIRING_CHAIN


def _data_path(values: dict[str, Any], azure: Any, window: timedelta) -> Report:
    from amlwire.reconcile.datapath import DataPathTarget, gather_data_path

    missing = [f"--{k.replace('_', '-')}" for k in ("subscription", "workspace_group", "workspace") if not values[k]]
    if not values["job"] and not values["compute"]:
        missing.append("--compute (or --job)")
    if missing:
        raise CannotRun("a job's data path needs " + ", ".join(missing))
    workspace = WorkspaceRef(values["subscription"], values["workspace_group"], values["workspace"])
    target = DataPathTarget(
        workspace,
        compute=values["compute"],
        job=values["job"],
        job_identity=values["job_identity"],
        user=values["user"],
        datastores=tuple(values["datastore"]),
    )
    facts = gather_data_path(target, azure, datetime.now(UTC), window)
    job = facts.job
    heading = (
        f"job {job.name} ({job.job_type}, {job.status}{': ' + job.error if job.error else ''})" if job else "a job"
    ) + f" on compute {facts.compute.name} ({facts.compute.kind}), identity {facts.job_identity}"
    shown = {
        "workspace": workspace.name,
        "compute": facts.compute.name,
        "job": job.name if job else None,
        "jobIdentity": facts.job_identity,
        "datastores": ", ".join(dict.fromkeys(u.datastore.name for u in facts.usages)),
    }
    return diagnose_data_path(facts), shown, heading, DATA_PATH_CHAIN
