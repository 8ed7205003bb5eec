"""`amlwire conformance`: ask the user's own Azure the questions the sandbox answers by world option.

Read-only unless --allow-writes; then it writes only in the scratch resource group's workspace, on objects named
with a recognisable prefix, and removes them at the end (after Ctrl-C or a failure too; a rerun removes leftovers
first). It writes a JSON report to attach to an issue and a world-options file the sandbox loads.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from amlwire.cli.settings import load_settings
from amlwire.domain import conformance as c
from amlwire.domain.conformance import Finding, Probe

ML = "Microsoft.MachineLearningServices"
ML_API = "2024-04-01"
COMPUTE_PREFIX = "amlwconf-"  # AML compute names are at most 16 characters: the prefix and 6 hex digits
STATUS_POLLS = 200


@dataclass(frozen=True)
class Inputs:
    subscription: str
    group: str
    workspace: str | None
    cluster: str | None
    failed_job: str | None
    timed_out_job: str | None
    deleted_issuer: str | None
    allow_writes: bool

    def given(self, need: str) -> bool:
        return bool(getattr(self, need))


class Denied(Exception):
    """Azure answered 403: the probe needs a role the caller lacks."""


class Answer:
    """An HTTP answer: status, headers, the JSON body (or {})."""

    def __init__(self, response: Any) -> None:
        self.status: int = response.status_code
        self.headers: dict[str, str] = {k.lower(): v for k, v in response.headers.items()}
        try:
            self.body: dict[str, Any] = response.json() if response.content else {}
        except ValueError:
            self.body = {}

    @property
    def code(self) -> str:
        return str((self.body.get("error") or {}).get("code") or "")


class Conformance:
    """The probes, run against ARM through amlwire's own pipeline (auth, retries, the ARM budget's pacing)."""

    def __init__(self, clients: Any, inputs: Inputs) -> None:
        self.clients = clients
        self.inputs = inputs
        self.created: list[str] = []  # compute names this run attached and has not yet detached

    # -- HTTP -------------------------------------------------------------------------------------------
    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Answer:
        from azure.core.rest import HttpRequest

        kwargs = {
            k: v
            for k, v in self.clients.common_kwargs().items()
            if k in ("connection_verify", "connection_timeout", "read_timeout")
        }
        answer = Answer(self.clients.pipeline().send_request(HttpRequest(method, url, json=body), **kwargs))
        if answer.status == 403:
            raise Denied(answer.code or "AuthorizationFailed")
        return answer

    def arm(self, method: str, path: str, body: dict[str, Any] | None = None, api: str = ML_API) -> Answer:
        return self.request(method, f"{self.clients.settings.arm_endpoint}{path}?api-version={api}", body)

    def workspace_path(self) -> str:
        i = self.inputs
        return f"/subscriptions/{i.subscription}/resourceGroups/{i.group}/providers/{ML}/workspaces/{i.workspace}"

    # -- the run -----------------------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        with _interrupts_raise():
            try:
                if self.inputs.allow_writes and self.inputs.workspace:
                    self.remove_leftovers()
                return [self.probe(p) for p in c.PROBES]
            finally:
                self.clean_up()

    def probe(self, probe: Probe) -> Finding:
        missing = [n for n in probe.needs if not self.inputs.given(n)]
        if missing:
            flags = ", ".join("--" + n.replace("_", "-") for n in missing)
            return Finding(probe.id, "not run", skipped=f"needs {flags}")
        if probe.writes and not self.inputs.allow_writes:
            return Finding(probe.id, "not run", skipped="writes: run with --allow-writes (scratch resource group)")
        try:
            return PROBE_RUNS[probe.id](self)
        except Denied as denied:
            return Finding(
                probe.id,
                "not run",
                skipped=f"Azure answered 403 {denied}: grant {probe.role} on {probe.scope} "
                f"({', '.join(probe.actions)})",
            )

    # -- objects this run creates ------------------------------------------------------------------------
    def attach(self, tags: dict[str, str]) -> tuple[str, Answer]:
        name = COMPUTE_PREFIX + secrets.token_hex(3)
        body = {
            "properties": {
                "computeType": "Kubernetes",
                "resourceId": self.inputs.cluster,
                "description": "amlwire conformance probe: removed at the end of the run",
                "properties": {"namespace": "default"},
            },
            "tags": tags,
        }
        answer = self.arm("PUT", f"{self.workspace_path()}/computes/{name}", body)
        if answer.status < 300:
            self.created.append(name)
        return name, answer

    def detach(self, name: str) -> Answer:
        return self.request(
            "DELETE",
            f"{self.clients.settings.arm_endpoint}{self.workspace_path()}/computes/{name}"
            f"?api-version={ML_API}&underlyingResourceAction=Detach",
        )

    def follow(self, answer: Answer) -> list[str]:
        """The status words of a long-running operation's status URL, read until it finishes."""
        url = answer.headers.get("azure-asyncoperation")
        words: list[str] = []
        for _ in range(STATUS_POLLS if url else 0):
            status = str(self.request("GET", str(url)).body.get("status") or "")
            words.append(status)
            if status.lower() in c.FINISHED_WORDS:
                break
            time.sleep(min(2.0, int(answer.headers.get("retry-after-ms", "500")) / 1000))
        return words

    def remove_leftovers(self) -> None:
        listed = self.arm("GET", f"{self.workspace_path()}/computes").body.get("value") or []
        for compute in listed:
            if str(compute.get("name", "")).startswith(COMPUTE_PREFIX):
                self.created.append(str(compute["name"]))
        self.clean_up()

    def clean_up(self) -> None:
        while self.created:
            name = self.created[-1]
            answer = self.detach(name)
            if answer.status < 300:
                self.follow(answer)
            self.created.pop()


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGTERM as Ctrl-C: either ends the run through its clean-up."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the probes -------------------------------------------------------------------------------------------
def arm_budget(run: Conformance) -> Finding:
    answer = run.arm("GET", run.workspace_path())
    left = answer.headers.get("x-ms-ratelimit-remaining-subscription-reads")
    if left is None:
        return Finding("arm-budget", f"{answer.status}: no x-ms-ratelimit-remaining-subscription-reads header")
    return Finding("arm-budget", f"{left} reads left", figures={"remainingReads": int(left)})


def tag_names(run: Conformance) -> Finding:
    name, answer = run.attach({"amlwire/conformance": "probe"})
    value, said = c.tag_names_option(answer.status, answer.code)
    if name in run.created:  # accepted: an attached compute to detach
        run.follow(answer)
    return Finding("tag-names", said, value)


def operation_status_words(run: Conformance) -> Finding:
    name, attached = run.attach({"amlwire-conformance": "probe"})
    if attached.status >= 300:
        return Finding("operation-status-words", f"the attach was refused: {attached.status} {attached.code}")
    words = run.follow(attached)
    detached = run.detach(name)
    words += run.follow(detached)
    run.created.remove(name)
    value, said = c.status_word_option(words)
    return Finding("operation-status-words", said, value)


def job_timeout(run: Conformance) -> Finding:
    job = run.arm("GET", f"{run.workspace_path()}/jobs/{run.inputs.timed_out_job}")
    if job.status == 404:
        return Finding("job-timeout", "no such job in the workspace")
    props = job.body.get("properties") or {}
    value, said = c.job_timeout_option(str(props.get("status")), (props.get("limits") or {}).get("timeout"))
    return Finding("job-timeout", said, value)


def stream_access_error(run: Conformance) -> Finding:
    workspace = run.workspace_path()
    found = run.arm("GET", workspace)
    discovery = str((found.body.get("properties") or {}).get("discoveryUrl") or "")
    history = run.request("GET", discovery).body.get("api") if discovery else None
    if not history:
        return Finding("stream-access-error", "the workspace names no run history service")
    details = run.request(
        "GET", f"{str(history).rstrip('/')}/history/v1.0{workspace}/runs/{run.inputs.failed_job}/details"
    )
    if details.status == 404:
        return Finding("stream-access-error", "no such job in the workspace")
    value, said = c.stream_error_option((details.body.get("error") or {}).get("error"))
    return Finding("stream-access-error", said, value)


def deleted_cluster_issuer(run: Conformance) -> Finding:
    import requests

    issuer = str(run.inputs.deleted_issuer)
    verify: str | bool = str(run.clients.settings.ca_bundle) if run.clients.settings.ca_bundle else True
    try:
        answer = requests.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10, verify=verify)
    except requests.RequestException as error:
        value, said = c.deleted_issuer_option(None, f"could not be asked ({type(error).__name__})")
    else:
        value, said = c.deleted_issuer_option(answer.status_code, f"answered {answer.status_code}")
    return Finding("deleted-cluster-issuer", said, value)


PROBE_RUNS: dict[str, Callable[[Conformance], Finding]] = {
    "arm-budget": arm_budget,
    "tag-names": tag_names,
    "operation-status-words": operation_status_words,
    "job-timeout": job_timeout,
    "stream-access-error": stream_access_error,
    "deleted-cluster-issuer": deleted_cluster_issuer,
}


# -- the command ------------------------------------------------------------------------------------------
def _report(findings: list[Finding], inputs: Inputs, include_ids: bool) -> dict[str, Any]:
    shown = (lambda text: text) if include_ids else c.redact
    return {
        "amlwireConformance": 1,
        "writes": inputs.allow_writes,
        "findings": [{k: shown(v) if isinstance(v, str) else v for k, v in f.as_dict().items()} for f in findings],
        "notProbed": [{"option": option, "why": why} for option, why in c.NOT_PROBED.items()],
        **({"subscription": inputs.subscription, "resourceGroup": inputs.group} if include_ids else {}),
    }


def _print(console: Console, findings: list[Finding]) -> None:
    table = Table(title="amlwire conformance")
    for column in ("probe", "rule", "answer", "world option"):
        table.add_column(column)
    for f in findings:
        probe = c.BY_ID[f.probe]
        setting = f"{probe.option}: {f.value}" if f.value and probe.option else ("-" if not f.skipped else "")
        answer = f"skipped: {f.skipped}" if f.skipped else f.answer
        table.add_row(probe.id, probe.rule, c.redact(answer), setting)
    console.print(table)


def _print_permissions(console: Console) -> None:
    """One line per probe (to copy into a role request): grant the role on the scope, or the probe is skipped."""
    for probe in c.PROBES:
        writes = "; writes (--allow-writes)" if probe.writes else ""
        role = f"{probe.role} on {probe.scope}" if probe.role else probe.scope
        actions = f" ({', '.join(probe.actions)})" if probe.actions else ""
        console.print(f"{probe.id}: {role}{actions}{writes}", soft_wrap=True, highlight=False, markup=False)


@click.command()
@click.option("--subscription", help="The subscription to probe.")
@click.option("--resource-group", "group", help="A scratch resource group: the only place writes happen.")
@click.option("--workspace", help="An AML workspace in the scratch resource group (compute and job probes).")
@click.option("--cluster", help="An AKS cluster's resource ID to attach (then detach) in the workspace.")
@click.option("--failed-job", help=f"A job that failed with {c.STREAM_AUTH} (how AML shaped its error).")
@click.option("--timed-out-job", help="A job that ran past its limits.timeout (how it ended).")
@click.option("--deleted-issuer", help="The OIDC issuer URL of an AKS cluster you deleted.")
@click.option("--allow-writes", is_flag=True, help="Run the probes that attach and detach a compute.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path(), show_default=True)
@click.option("--include-ids", is_flag=True, help="Keep subscription, resource and object IDs in the report.")
@click.option("--print-permissions", is_flag=True, help="List what each probe needs, and exit.")
def conformance(
    subscription: str | None,
    group: str | None,
    workspace: str | None,
    cluster: str | None,
    failed_job: str | None,
    timed_out_job: str | None,
    deleted_issuer: str | None,
    allow_writes: bool,
    out: Path,
    include_ids: bool,
    print_permissions: bool,
) -> None:
    """Check amlwire's assumptions about Azure against your subscription; write conformance.json (a report to
    attach to an issue) and conformance.yaml (world options: amlwire sandbox --options conformance.yaml)."""
    console = Console()
    if print_permissions:
        _print_permissions(console)
        return
    if not subscription or not group:
        raise click.UsageError("--subscription and --resource-group (a scratch resource group) are required")
    from amlwire.adapters.azure.clients import AzureClients

    inputs = Inputs(subscription, group, workspace, cluster, failed_job, timed_out_job, deleted_issuer, allow_writes)
    run = Conformance(AzureClients(load_settings()), inputs)
    try:
        findings = run.run()
    except KeyboardInterrupt:
        click.echo("amlwire conformance: interrupted; what it created is removed", err=True)
        raise SystemExit(130) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "conformance.json").write_text(json.dumps(_report(findings, inputs, include_ids), indent=2) + "\n")
    (out / "conformance.yaml").write_text(yaml.safe_dump(c.world_options(findings), sort_keys=True))
    _print(console, findings)
    console.print(f"wrote {out / 'conformance.json'} and {out / 'conformance.yaml'}", highlight=False)
