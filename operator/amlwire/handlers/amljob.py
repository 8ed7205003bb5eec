"""kopf handlers for AmlJob, and the update the job poller makes outside any handler."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import kopf
from pydantic import ValidationError

from amlwire import metrics
from amlwire.api.amljob import AmlJobSpec, AmlJobStatus
from amlwire.api.common import GROUP, VERSION
from amlwire.config import Settings
from amlwire.domain.view import ComputeView
from amlwire.handlers.attachedcompute import INDEX
from amlwire.handlers.status import GENERATION, apply, finish_deletion, now, pass_fields, start_pass, write
from amlwire.reconcile.amljob import JobResult, JobScope, cancel_job, reconcile_job
from amlwire.reconcile.poller import FollowedJob, NotShownYet
from amlwire.reconcile.services import Services
from amlwire.reconcile.status import load_status, without_framework

PLURAL = "amljobs"
KIND = "AmlJob"
log = logging.getLogger("amlwire.jobs")
ComputeIndex = kopf.Index[str, ComputeView]


def compute_of(index: ComputeIndex, name: str) -> ComputeView | None:
    return next(iter(index.get(name, [])), None)


def _scope(
    services: Services,
    computes: ComputeIndex,
    namespace: str,
    name: str,
    uid: str,
    generation: int | None,
    spec: AmlJobSpec,
    previous: AmlJobStatus,
) -> JobScope:
    return JobScope(
        **pass_fields(services, name, generation, spec, previous),
        namespace=namespace,
        uid=uid,
        watch=services.watch,
        compute=compute_of(computes, spec.compute_ref),
    )


def run_reconcile(services: Services, scope: JobScope) -> JobResult:
    started = time.monotonic()
    with services.object_locks.hold(scope.uid):
        result = reconcile_job(scope)
    metrics.record_reconcile(
        KIND,
        scope.namespace,
        scope.name,
        time.monotonic() - started,
        result.status.conditions,
        result.status.aml_status,
    )
    if result.reverify:
        services.kube.request_reconcile(result.reverify, now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    return result


def reconcile_aml_job(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    services: Services = kwargs["memo"].services
    namespace, name, uid = str(body.metadata.namespace or ""), str(body.metadata.name), str(body.metadata.uid)
    write = partial(services.kube.patch_aml_job_status, namespace, name)
    parsed, previous = start_pass(body, patch, AmlJobSpec, AmlJobStatus, write)
    computes: ComputeIndex = kwargs[INDEX]
    scope = _scope(services, computes, namespace, name, uid, body.metadata.get("generation"), parsed, previous)
    result = run_reconcile(services, scope)
    apply(patch, services.kube, body, body.status, result.status, result.events, result.requeue_after, result.summary)


def delete_aml_job(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    services: Services = kwargs["memo"].services
    namespace, name, uid = str(body.metadata.namespace or ""), str(body.metadata.name), str(body.metadata.uid)
    try:
        parsed = AmlJobSpec.model_validate(dict(body.spec))
    except ValidationError:
        return
    previous = load_status(AmlJobStatus, body.status)
    scope = _scope(services, kwargs[INDEX], namespace, name, uid, body.metadata.get("generation"), parsed, previous)
    with services.object_locks.hold(uid):
        result = cancel_job(scope)
    finish_deletion(patch, services.kube, body, result)
    metrics.STATES.forget(KIND, namespace, name)


def poller_update(services: Services, computes: ComputeIndex) -> Callable[[FollowedJob], None]:
    """What the job poller does with a job whose AML status changed: reconcile it and write its status."""

    def update(job: FollowedJob) -> None:
        body = services.kube.get_aml_job(job.namespace, job.name)
        if body is None or body["metadata"].get("deletionTimestamp") or body["metadata"].get("uid") != job.uid:
            services.watch.unfollow(job.workspace_id, job.aml_job_name)
            return
        current = without_framework(body.get("status"))
        if services.watch.awaits_its_write(job, current.get("amlJobName")):
            raise NotShownYet(f"AmlJob {job.namespace}/{job.name} does not show AML job {job.aml_job_name} yet")
        try:
            spec = AmlJobSpec.model_validate(body["spec"])
        except ValidationError:
            return
        previous = load_status(AmlJobStatus, current)
        generation = body["metadata"].get("generation")
        scope = _scope(services, computes, job.namespace, job.name, job.uid, generation, spec, previous)
        result = run_reconcile(services, scope)
        send = partial(services.kube.patch_aml_job_status, job.namespace, job.name)
        write(send, services.kube, body, current, result.status, result.events)

    return update


async def track_running(*, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every AmlJob event keeps the running-jobs registry (reconcile/running.py) true: no thread, no API call."""
    namespace, name = str(body.metadata.namespace or ""), str(body.metadata.name)
    running = memo.services.running
    if type == "DELETED":
        running.forget(namespace, name)
    else:
        running.observe(namespace, name, str(body.spec.get("computeRef", "")), body.status)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    jobs = (GROUP, VERSION, PLURAL)
    for decorator in (
        kopf.on.resume(*jobs, registry=registry),
        kopf.on.create(*jobs, registry=registry),
        kopf.on.update(*jobs, field=GENERATION, registry=registry),
    ):
        decorator(reconcile_aml_job)
    kopf.on.delete(*jobs, registry=registry)(delete_aml_job)
    kopf.on.event(*jobs, registry=registry)(track_running)
