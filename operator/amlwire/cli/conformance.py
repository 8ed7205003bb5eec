"""`amlwire conformance`: ask the user's own Azure the questions the sandbox answers by world option.

Read-only unless --allow-writes; then it writes only in the scratch resource group's workspace, on objects named
with a recognisable prefix, and removes them at the end (after Ctrl-C or a failure too; a rerun removes leftovers
first). It writes a JSON report to attach to an issue and a world-options file the sandbox loads.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from amlwire.api import roles
from amlwire.cli.settings import load_settings
from amlwire.domain import conformance as c
from amlwire.domain.conformance import Finding, Probe

ML = "Microsoft.MachineLearningServices"
ML_API = "2024-04-01"
MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
MSI_API = "2023-01-31"
AUTHZ_API = "2022-04-01"
READER = roles.guid("Reader")
PROPAGATION_TIMEOUT = 900.0  # Learn: role assignments can take up to 10 minutes
COMPUTE_PREFIX = "amlwconf-"  # what a run creates is named so (AML compute names: at most 16 characters)
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
    kubeconfig: Path | None = None
    kube_context: str | None = None
    location: str = "eastus"
    samples: int = 3

    def given(self, need: str) -> bool:
        return bool(getattr(self, need))


class Denied(Exception):
    """Azure answered 403: the probe needs a role the caller lacks."""


class Refused(Exception):
    """Azure refused a step of a probe otherwise (the probe reports it)."""


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

    @property
    def refusal(self) -> str:
        """How Azure said no: status, code and the first line of its message."""
        message = str((self.body.get("error") or {}).get("message") or "").split("\n")[0][:300]
        return f"{self.status} {self.code}: {message}".rstrip(": ")


class Conformance:
    """The probes, run against ARM through amlwire's own pipeline (auth, retries, the ARM budget's pacing)."""

    def __init__(self, clients: Any, inputs: Inputs) -> None:
        self.clients = clients
        self.inputs = inputs
        self.created: list[str] = []  # compute names this run attached and has not yet detached
        self.identities: list[str] = []  # scratch identities (resource paths) this run made and has not deleted
        self.assignments: list[str] = []  # role assignments (resource paths) this run made and has not deleted
        self._identity: dict[str, Any] | None = None
        self.token: str | None = None  # an ARM token of the scratch identity, once Entra exchanged for one
        self.left = ""  # what the run could not remove, if anything

    # -- HTTP -------------------------------------------------------------------------------------------
    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Answer:
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, url, json=body)
        answer = Answer(self.clients.pipeline().send_request(request, **self.clients.connection_kwargs()))
        if answer.status == 403:
            raise Denied(answer.code or "AuthorizationFailed")
        return answer

    def arm(self, method: str, path: str, body: dict[str, Any] | None = None, api: str = ML_API) -> Answer:
        return self.request(method, f"{self.clients.settings.arm_endpoint}{path}?api-version={api}", body)

    def group_path(self) -> str:
        return f"/subscriptions/{self.inputs.subscription}/resourceGroups/{self.inputs.group}"

    def workspace_path(self) -> str:
        i = self.inputs
        return f"/subscriptions/{i.subscription}/resourceGroups/{i.group}/providers/{ML}/workspaces/{i.workspace}"

    # -- the run -----------------------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        with _interrupts_raise():
            try:
                if self.inputs.allow_writes:
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
        import requests
        from azure.core.exceptions import AzureError as SdkError

        try:
            return PROBE_RUNS[probe.id](self)
        except Refused as refused:
            return Finding(probe.id, str(refused))
        except (SdkError, requests.RequestException) as error:  # not reached, or not signed in
            return Finding(probe.id, "not run", skipped=f"Azure could not be asked: {type(error).__name__}: {error}")
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
        """What an earlier run killed outright left: its computes and scratch identities (by their prefix)."""
        try:
            self._find_leftovers()
        except Denied:
            return  # the probes that need the role say so
        self.clean_up()

    def _find_leftovers(self) -> None:
        if self.inputs.workspace:
            listed = self.arm("GET", f"{self.workspace_path()}/computes").body.get("value") or []
            self.created += [str(x["name"]) for x in listed if str(x.get("name", "")).startswith(COMPUTE_PREFIX)]
        try:
            identities = self.arm("GET", f"{self.group_path()}/providers/{MSI}", api=MSI_API).body.get("value") or []
        except Denied:
            identities = []
        for identity in identities:
            if str(identity.get("name", "")).startswith(COMPUTE_PREFIX):
                self.identities.append(f"{self.group_path()}/providers/{MSI}/{identity['name']}")

    def clean_up(self) -> None:
        """Remove what this run made; what cannot be removed is said (it carries the prefix: a rerun removes it)."""
        try:
            self._remove_created()
        except Denied as denied:
            self.left = f"could not remove what the run made ({denied}); rerun with the roles to remove it"

    def _remove_created(self) -> None:
        while self.created:
            name = self.created[-1]
            answer = self.detach(name)
            if answer.status < 300:
                self.follow(answer)
            self.created.pop()
        while self.assignments:
            self.arm("DELETE", self.assignments[-1], api=AUTHZ_API)
            self.assignments.pop()
        while self.identities:  # its federated credentials go with it
            self.arm("DELETE", self.identities[-1], api=MSI_API)
            self.identities.pop()
        self._identity = None

    # -- a scratch identity, federated credentials and tokens ---------------------------------------------
    def scratch_identity(self) -> dict[str, Any]:
        if self._identity is None:
            path = f"{self.group_path()}/providers/{MSI}/{COMPUTE_PREFIX}{secrets.token_hex(3)}"
            answer = self.arm("PUT", path, {"location": self.inputs.location}, api=MSI_API)
            if answer.status >= 300:
                raise Refused(f"creating a scratch identity was refused: {answer.refusal}")
            self.identities.append(path)
            self._identity = {"path": path, **(answer.body.get("properties") or {})}
        return self._identity

    def put_credential(self, name: str, issuer: str, subject: str) -> tuple[Answer, float]:
        body = {"properties": {"issuer": issuer, "subject": subject, "audiences": [c.AUDIENCE]}}
        path = f"{self.scratch_identity()['path']}/federatedIdentityCredentials/{name}"
        started = time.monotonic()
        answer = self.arm("PUT", path, body, api=MSI_API)
        return answer, time.monotonic() - started

    def exchange(self, assertion: str, scope: str) -> tuple[int, dict[str, Any]]:
        """Entra's client-assertion exchange for the scratch identity, as the workload identity webhook's
        credential does it."""
        import requests

        identity = self.scratch_identity()
        authority = os.environ.get("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com").rstrip("/")
        form = {
            "client_id": identity["clientId"],
            "scope": scope,
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        answer = requests.post(
            f"{authority}/{identity['tenantId']}/oauth2/v2.0/token",
            data=form,
            timeout=30,
            verify=self.clients.tls_verify(),
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, {}

    def service_account_token(self) -> str:
        """A token of the cluster's default service account for Entra (TokenRequest: nothing is stored)."""
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[c.AUDIENCE], expiration_seconds=3600)
        )
        try:
            api = config.new_client_from_config(
                config_file=str(self.inputs.kubeconfig), context=self.inputs.kube_context
            )
            made = client.CoreV1Api(api).create_namespaced_service_account_token("default", "default", request)
        except ApiException as error:
            raise Refused(
                f"the cluster refused a token for service account default/default: {error.status} {error.reason} "
                "(needs create on serviceaccounts/token in namespace default)"
            ) from None
        except (HTTPError, OSError, config.ConfigException) as error:
            raise Refused(f"the cluster could not be asked for a token: {type(error).__name__}") from None
        if made.status is None:
            raise Refused("the cluster issued no service-account token")
        return str(made.status.token)


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


def fic_write_window(run: Conformance) -> Finding:
    """Two writes on one identity, the second 50 ms into the first: the window is how long the first held the
    identity, when the second was refused meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    durations, refused_meanwhile = [], []
    with ThreadPoolExecutor(1) as writer:
        for i in range(run.inputs.samples):
            first = writer.submit(run.put_credential, f"{COMPUTE_PREFIX}w{i}a", ISSUER, f"a{i}")
            time.sleep(0.05)
            second, _ = run.put_credential(f"{COMPUTE_PREFIX}w{i}b", ISSUER, f"b{i}")
            answer, seconds = first.result()
            if answer.status >= 300:
                raise Refused(f"a credential write was refused: {answer.refusal}")
            refused_meanwhile.append(second.status == 409)
            durations.append(seconds)
            while second.status == 409:  # written in the end, as a caller would retry it
                time.sleep(0.1)
                second, _ = run.put_credential(f"{COMPUTE_PREFIX}w{i}b", ISSUER, f"b{i}")
    if not any(refused_meanwhile):
        return Finding("fic-write-window", "a second write 50 ms into the first was never refused", 0.0)
    value, figures = c.seconds_option(durations)
    said = f"a write holds the identity {figures['p50']} s (p50), {figures['max']} s (max); a second meanwhile: 409"
    return Finding("fic-write-window", said, value, figures=figures)


def fic_propagation(run: Conformance) -> Finding:
    """A token of the cluster's default service account, federated anew for each sample: seconds from the
    credential's write until Entra exchanges the token with it."""
    token = run.service_account_token()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    scope = run.clients.settings.arm_endpoint.rstrip("/") + "/.default"
    identity = run.scratch_identity()["path"]
    samples = []
    for i in range(run.inputs.samples):
        if i:  # one credential per issuer and subject: the next sample replaces the last
            run.arm("DELETE", f"{identity}/federatedIdentityCredentials/{COMPUTE_PREFIX}p{i - 1}", api=MSI_API)
        answer, _ = run.put_credential(f"{COMPUTE_PREFIX}p{i}", issuer, subject)
        if answer.status >= 300:
            raise Refused(f"the credential was refused: {answer.refusal}")

        def exchanged() -> bool:
            status, body = run.exchange(token, scope)
            run.token = str(body["access_token"]) if status == 200 else run.token
            return status == 200

        samples.append(_until(exchanged, "Entra to honour the credential"))
    value, figures = c.seconds_option(samples)
    said = f"honoured after {figures['p50']} s (p50), {figures['max']} s (max)"
    return Finding("fic-propagation", said, value, figures=figures)


def role_propagation(run: Conformance) -> Finding:
    """Reader on the scratch identity, for the identity itself: seconds until its own token may read it."""
    import requests

    if run.token is None:
        fic_propagation(run)
    identity = run.scratch_identity()
    path, endpoint = identity["path"], run.clients.settings.arm_endpoint.rstrip("/")

    def reads_itself() -> int:
        return requests.get(
            f"{endpoint}{path}?api-version={MSI_API}",
            headers={"Authorization": f"Bearer {run.token}"},
            timeout=30,
            verify=run.clients.tls_verify(),
        ).status_code

    reader = f"/subscriptions/{run.inputs.subscription}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    body = {
        "properties": {
            "roleDefinitionId": reader,
            "principalId": identity["principalId"],
            "principalType": "ServicePrincipal",
        }
    }
    samples = []
    for _ in range(run.inputs.samples):
        assignment = f"{path}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
        answer = run.arm("PUT", assignment, body, api=AUTHZ_API)
        if answer.status >= 300:
            raise Refused(f"the role assignment was refused: {answer.refusal}")
        run.assignments.append(assignment)
        samples.append(_until(lambda: reads_itself() == 200, "the role to take effect"))
        run.arm("DELETE", assignment, api=AUTHZ_API)
        run.assignments.remove(assignment)
        _until(lambda: reads_itself() != 200, "the role's removal to take effect")  # before the next sample
    value, figures = c.seconds_option(samples)
    said = f"effective after {figures['p50']} s (p50), {figures['max']} s (max)"
    return Finding("role-propagation", said, value, figures=figures)


def _until(done: Callable[[], bool], what: str) -> float:
    """Seconds until `done()`, asked every quarter second; a Refused past the propagation timeout."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > PROPAGATION_TIMEOUT:
            raise Refused(f"waited {PROPAGATION_TIMEOUT:.0f} s for {what}")
        time.sleep(0.25)
    return time.monotonic() - started


def deleted_cluster_issuer(run: Conformance) -> Finding:
    """The issuer asked as the operator asks another cluster's (AzurePort.discover_issuer)."""
    from amlwire.adapters.azure.adapter import AzureAdapter

    value, said = c.deleted_issuer_option(AzureAdapter(run.clients).discover_issuer(str(run.inputs.deleted_issuer)))
    return Finding("deleted-cluster-issuer", said, value)


PROBE_RUNS: dict[str, Callable[[Conformance], Finding]] = {
    "arm-budget": arm_budget,
    "tag-names": tag_names,
    "operation-status-words": operation_status_words,
    "job-timeout": job_timeout,
    "stream-access-error": stream_access_error,
    "fic-write-window": fic_write_window,
    "fic-propagation": fic_propagation,
    "role-propagation": role_propagation,
    "deleted-cluster-issuer": deleted_cluster_issuer,
}
ISSUER = "https://amlwire-conformance.invalid/"  # the write-window probe's credentials are never exchanged


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
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A kubeconfig of the AKS cluster: the propagation probes federate its default service account's token.",
)
@click.option("--context", "kube_context", help="The kubeconfig context to use.")
@click.option("--location", default="eastus", show_default=True, help="Region of the scratch identity.")
@click.option("--samples", default=3, show_default=True, type=click.IntRange(1, 10), help="Timings measured.")
@click.option("--allow-writes", is_flag=True, help="Run the probes that write (in the scratch resource group).")
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
    kubeconfig: Path | None,
    kube_context: str | None,
    location: str,
    samples: int,
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

    inputs = Inputs(
        subscription,
        group,
        workspace,
        cluster,
        failed_job,
        timed_out_job,
        deleted_issuer,
        allow_writes,
        kubeconfig,
        kube_context,
        location,
        samples,
    )
    run = Conformance(AzureClients(load_settings()), inputs)
    try:
        findings = run.run()
    except KeyboardInterrupt:
        click.echo("amlwire conformance: interrupted; what it created is removed", err=True)
        raise SystemExit(130) from None
    if run.left:
        click.echo(f"amlwire conformance: {run.left}", err=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conformance.json").write_text(json.dumps(_report(findings, inputs, include_ids), indent=2) + "\n")
    (out / "conformance.yaml").write_text(yaml.safe_dump(c.world_options(findings), sort_keys=True))
    _print(console, findings)
    console.print(f"wrote {out / 'conformance.json'} and {out / 'conformance.yaml'}", highlight=False)
