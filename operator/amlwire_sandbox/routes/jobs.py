"""AML jobs: submission, reads, listing, cancel; run history, MLflow metrics, logs and service discovery."""

from __future__ import annotations

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.http import HISTORY, WS, Call, json_response, paged
from amlwire_sandbox.router import route
from amlwire_sandbox.state import ArmError, Resource, not_found

JOB = WS + "/jobs/{job}"
ML = "Microsoft.MachineLearningServices/workspaces"
RUNS_READ = ML + "/experiments/runs/read"


@route("PUT", "ml.job", JOB, ML + "/jobs/write")
def put_job(call: Call) -> web.Response:
    resource, created = call.jobs.submit(call.id(JOB), call.json(), call.caller)
    return json_response(call.jobs.refresh(resource).body, status=201 if created else 200)


@route("GET", "ml.job", JOB, ML + "/jobs/read")
def get_job(call: Call) -> web.Response:
    job = call.state.get(call.id(JOB))
    if job is None or job.type != ids.JOB:
        raise ArmError(404, "UserError", f"Job {call.params['job']} was not found in the workspace.")
    return json_response(call.jobs.refresh(job).body)


@route("GET", "ml.job.list", WS + "/jobs", ML + "/jobs/read")
def list_jobs(call: Call) -> web.Response:
    jobs = call.jobs.list(call.id(WS), call.query.get("tag"), call.query.get("listViewType"))
    page = paged(call, jobs, call.state.timing.page_size)
    page["value"] = [call.jobs.refresh(j).body for j in page["value"]]  # only the page's: a listing of 10,000 jobs
    return json_response(page)


@route("POST", "ml.job.cancel", JOB + "/cancel", ML + "/jobs/cancel/action")
def cancel_job(call: Call) -> web.Response:
    job = call.state.require(call.id(JOB), ids.JOB)
    call.jobs.cancel(job)
    operation = call.state.start_operation(job.id, "JobCancel", seconds=0)
    url = call.state.operation_result_url(operation)
    return web.Response(status=202, headers={"Location": url, "retry-after-ms": "50"})


def _job_for_history(call: Call) -> Resource:
    job = call.state.get(call.id(WS) + f"/jobs/{call.params['run']}")
    if job is None:
        raise ArmError(404, "UserError", f"Run {call.params['run']} was not found.")
    return job


@route("GET", "history.run.details", HISTORY + "/runs/{run}/details", RUNS_READ)
def run_details(call: Call) -> web.Response:
    return json_response(call.jobs.run_details(_job_for_history(call)))


@route("GET", "history.run.details", HISTORY + "/experiments/{experiment}/runs/{run}/details", RUNS_READ)
def run_details_by_experiment(call: Call) -> web.StreamResponse:
    return run_details(call)


@route("GET", "history.run", HISTORY + "/runs/{run}", RUNS_READ)
def run(call: Call) -> web.Response:
    details = call.jobs.run_details(_job_for_history(call))
    return json_response({k: v for k, v in details.items() if k not in ("logFiles", "runDefinition")})


@route("GET", "mlflow.run", "/mlflow/v1.0" + WS + "/api/2.0/mlflow/runs/get", RUNS_READ)
def mlflow_run(call: Call) -> web.Response:
    run_id = call.query.get("run_id") or call.query.get("run_uuid") or ""
    job = call.state.get(call.id(WS) + f"/jobs/{run_id}")
    if job is None:
        raise ArmError(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
    call.jobs.refresh(job)
    status = job.properties["status"]
    stamp = int(job.extra.get("ended", job.created) * 1000)
    logged, params, tags = call.jobs.logged(job)
    metrics = [{"key": k, "value": v, "timestamp": stamp, "step": 0} for k, v in logged.items()]
    mlflow_status = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED"}.get(status, "RUNNING")
    info = {
        "run_id": run_id,
        "run_uuid": run_id,
        "status": mlflow_status,
        "experiment_id": job.properties.get("experimentName"),
    }
    # rule: ml.mlflow-run-info
    for field, moment in (("start_time", "started"), ("end_time", "ended")):
        if job.extra.get(moment) is not None:
            info[field] = int(job.extra[moment] * 1000)
    return json_response(
        {
            "run": {
                "info": info,
                "data": {
                    "metrics": metrics,
                    "params": [{"key": k, "value": v} for k, v in params.items()],
                    "tags": [{"key": k, "value": v} for k, v in tags.items()],
                },
            }
        }
    )


@route("GET", "ml.discovery", "/discovery/{location}", authenticated=False)
def discovery(call: Call) -> web.Response:
    services = (
        "api",
        "catalog",
        "experimentation",
        "gallery",
        "history",
        "hyperdrive",
        "labeling",
        "modelmanagement",
        "pipelines",
    )
    return json_response(dict.fromkeys(services, call.base_url) | {"studio": "https://ml.azure.com"})


@route("GET", "sandbox.log", "/_sandbox/logs/{job}", authenticated=False)
def job_log(call: Call) -> web.Response:
    job = next((j for j in call.state.of_type(ids.JOB) if j.name == call.params["job"]), None)
    if job is None:
        raise not_found("job", call.params["job"])
    return web.Response(text=call.jobs.log(job))
