"""kopf handlers for AmlJob, and the per-AttachedCompute daemon that follows AML job status."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from amlwire import metrics
from amlwire.api.amljob import AmlJobSpec, AmlJobStatus
from amlwire.api.common import GROUP, VERSION
from amlwire.config import Settings
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.errors import AzureError, KubeError
from amlwire.domain.jobs import TAG_COMPUTE, TERMINAL
from amlwire.handlers.status import FRAMEWORK_FIELD, invalid_spec, load_status, post, stall_invalid, write_status
from amlwire.main import Services
from amlwire.reconcile.amljob import JobResult, JobScope, cancel_job, compute_view, reconcile_job

PLURAL = "amljobs"
log = logging.getLogger("amlwire.jobs")


def computes_by_name(name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, dict[str, Any]]:
    """Index: AttachedComputes by name, for admitting jobs without reading the API."""
    return {name: {"spec": dict(spec), "status": {k: v for k, v in (status or {}).items() if k != FRAMEWORK_FIELD}}}


def jobs_by_compute(
    namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, dict[str, Any]]:
    """Index: AmlJobs by the AttachedCompute they run on, for that compute's poller."""
    status = status or {}
    return {
        str(spec.get("computeRef", "")): {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "amlJobName": status.get("amlJobName"),
            "amlStatus": status.get("amlStatus"),
            "workspace": status.get("workspace"),
        }
    }


def _view(index: kopf.Index[str, dict[str, Any]], compute_ref: str) -> Any:
    for entry in index.get(compute_ref, []):
        return compute_view(compute_ref, entry["spec"], entry["status"])
    return None


def _scope(
    namespace: str,
    name: str,
    uid: str,
    generation: int | None,
    spec: AmlJobSpec,
    status: Mapping[str, Any] | None,
    services: Services,
    computes: kopf.Index[str, dict[str, Any]],
) -> JobScope:
    return JobScope(
        namespace=namespace,
        name=name,
        uid=uid,
        generation=generation,
        spec=spec,
        previous=load_status(AmlJobStatus, status),
        now=datetime.now(UTC),
        timings=services.timings,
        azure=services.azure,
        watch=services.watch,
        compute=_view(computes, spec.compute_ref),
        poll_interval=services.settings.job_poll_interval,
    )


def run_reconcile(
    namespace: str,
    name: str,
    uid: str,
    generation: int | None,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    services: Services,
    computes: kopf.Index[str, dict[str, Any]],
) -> JobResult:
    spec = AmlJobSpec.model_validate(dict(raw_spec))
    started = time.monotonic()
    with services.object_locks.hold(uid):
        result = reconcile_job(_scope(namespace, name, uid, generation, spec, status, services, computes))
    metrics.record_reconcile(
        "AmlJob", namespace, name, time.monotonic() - started, result.status.conditions, result.status.aml_status
    )
    return result


def reconcile_aml_job(
    namespace: str,
    name: str,
    uid: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    computes_by_name: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    services: Services = memo.services
    generation = body.metadata.get("generation")
    try:
        result = run_reconcile(namespace, name, uid, generation, spec, status, services, computes_by_name)
    except ValidationError as error:
        message = invalid_spec(error)
        stall_invalid(patch, status, AmlJobStatus, generation, message)
        raise kopf.PermanentError(message) from error
    write_status(patch, status, result.status)
    post(body, result.events)
    if result.requeue_after is not None:
        raise kopf.TemporaryError("following the AML job", delay=result.requeue_after)


def delete_aml_job(
    namespace: str,
    name: str,
    uid: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    computes_by_name: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    services: Services = memo.services
    try:
        parsed = AmlJobSpec.model_validate(dict(spec))
    except ValidationError:
        return
    scope = _scope(namespace, name, uid, body.metadata.get("generation"), parsed, status, services, computes_by_name)
    try:
        with services.object_locks.hold(uid):
            events = cancel_job(scope)
    except AzureError as error:
        if not error.retryable:
            kopf.event(body, type="Warning", reason=error.reason, message=f"could not cancel: {error.message}"[:1024])
            return  # let go: nothing amlwire can do about it
        raise kopf.TemporaryError(error.message, delay=error.retry_after or services.timings.retry_delay) from error
    post(body, events)
    metrics.STATES.forget("AmlJob", namespace, name)


def watch_compute_jobs(
    name: str,
    spec: kopf.Spec,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    jobs_by_compute: kopf.Index[str, dict[str, Any]],
    computes_by_name: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    """One poller per AttachedCompute: list its workspace's amlwire jobs, update the jobs that changed."""
    services: Services = memo.services
    base = services.settings.job_poll_interval
    workspace_spec = spec.get("workspace") or {}
    workspace = WorkspaceRef(
        workspace_spec.get("subscriptionId", ""),
        workspace_spec.get("resourceGroup", ""),
        workspace_spec.get("name", ""),
    )
    services.watch.attach(workspace.id)
    interval = base
    try:
        while not stopped and not services.shutdown.is_set():
            active = [j for j in jobs_by_compute.get(name, []) if j["amlJobName"] and j["amlStatus"] not in TERMINAL]
            changed = 0
            try:
                if active and services.watch.claim(workspace.id, interval):
                    changed = _poll(services, workspace, name, active, computes_by_name)
            except Exception:  # a poller must outlive any surprise; the next interval tries again
                log.exception("polling AML jobs of AttachedCompute %s failed", name)
            interval = base if changed or not active else min(interval * 1.5, base * 8)
            _pause(stopped, services.shutdown, interval)
    finally:
        services.watch.detach(workspace.id)


def _pause(stopped: kopf.DaemonStopped, shutdown: threading.Event, seconds: float) -> None:
    """Sleep until the next poll, waking within a second if kopf stops this daemon or the operator exits.

    kopf sets `stopped` for the daemons it knows of; a daemon it spawns while exiting is told only by
    `shutdown`, and a thread nobody stops keeps the process from exiting on SIGTERM.
    """
    deadline = time.monotonic() + seconds
    while not stopped and not shutdown.is_set() and (left := deadline - time.monotonic()) > 0:
        stopped.wait(min(left, 1.0))


def _poll(
    services: Services,
    workspace: WorkspaceRef,
    compute: str,
    active: list[dict[str, Any]],
    computes: kopf.Index[str, dict[str, Any]],
) -> int:
    wanted = {j["amlJobName"] for j in active}
    try:
        listing = services.azure.list_jobs(workspace, TAG_COMPUTE, wanted)
    except AzureError as error:
        log.warning("listing AML jobs of %s failed (%s); retrying next interval", workspace.name, error.message)
        return 0
    services.watch.record(workspace.id, listing)
    updated = 0
    for job in active:
        snapshot = listing.get(job["amlJobName"])
        if snapshot is None or snapshot.status == job["amlStatus"]:
            continue
        try:
            updated += _update(services, job, computes)
        except (AzureError, KubeError, ValidationError) as error:
            log.warning("updating AmlJob %s/%s failed: %s", job["namespace"], job["name"], error)
    return updated


def _update(services: Services, job: dict[str, Any], computes: kopf.Index[str, dict[str, Any]]) -> int:
    """Reconcile one job whose AML status changed, and write its status (outside a kopf handler)."""
    body = services.kube.get_aml_job(job["namespace"], job["name"])
    if body is None or body["metadata"].get("deletionTimestamp"):
        return 0
    current = {k: v for k, v in (body.get("status") or {}).items() if k != FRAMEWORK_FIELD}
    result = run_reconcile(
        job["namespace"],
        job["name"],
        job["uid"],
        body["metadata"].get("generation"),
        body["spec"],
        current,
        services,
        computes,
    )
    collected = kopf.Patch()
    if write_status(collected, current, result.status):
        services.kube.patch_aml_job_status(job["namespace"], job["name"], dict(collected.get("status", {})))
    post(body, result.events)
    return 1


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    jobs = (GROUP, VERSION, PLURAL)
    computes = (GROUP, VERSION, "attachedcomputes")
    kopf.index(*computes, registry=registry, id="computes_by_name")(computes_by_name)
    kopf.index(*jobs, registry=registry, id="jobs_by_compute")(jobs_by_compute)
    for decorator in (
        kopf.on.resume(*jobs, registry=registry),
        kopf.on.create(*jobs, registry=registry),
        kopf.on.update(*jobs, field="spec", registry=registry),
    ):
        decorator(reconcile_aml_job)
    kopf.on.delete(*jobs, registry=registry)(delete_aml_job)
    kopf.daemon(*computes, registry=registry, cancellation_timeout=10.0)(watch_compute_jobs)
