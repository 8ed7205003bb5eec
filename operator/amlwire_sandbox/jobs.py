"""AML jobs in the sandbox: submission rules, the state machine, judging the wiring, metrics."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlsplit

from amlwire_sandbox import ids, jobpod, sidecar
from amlwire_sandbox.blobs import STORAGE_SUFFIX, Blobs
from amlwire_sandbox.cloud import STREAM_AUTH, TERMINAL_JOB_STATES, Cloud, model_ref
from amlwire_sandbox.datapath import DataPath, account_of, steps_of
from amlwire_sandbox.execution import Execution, Executor, duration_seconds, exit_error, runs_isaaclab, sim_module
from amlwire_sandbox.state import ArmError, Resource, iso, key

SIDECAR_MODES = {"ro_mount", "readonlymount", "download", "rw_mount", "readwritemount", "upload", "direct"}
DATA_INPUTS = {"uri_file", "uri_folder", "custom_model", "mlflow_model", "mltable", "triton_model"}


class Jobs:
    """AML command jobs over the emulated services."""

    def __init__(self, cloud: Cloud, blobs: Blobs) -> None:
        self.cloud = cloud
        self.state = cloud.state
        self.blobs = blobs
        self.executor = Executor()

    def stop(self) -> None:
        """End every job process the sandbox started and remove their folders."""
        self.executor.stop_all()

    def submit(self, job_id: str, body: dict[str, Any], submitter: str | None = None) -> tuple[Resource, bool]:
        workspace_id = job_id.split("/jobs/", 1)[0]
        workspace = self.cloud.workspace(workspace_id)
        existing = self.state.get(job_id)
        props = body.get("properties") or {}
        if existing is not None:  # rule: ml.job-immutable
            return self._update_mutable(existing, props), False
        self._validate(props, workspace_id)
        stored = copy.deepcopy(body)
        stored_props = stored["properties"]
        stored_props["status"] = "NotStarted"
        stored_props.setdefault("experimentName", "Default")
        stored_props.setdefault("displayName", job_id.rsplit("/", 1)[-1])
        stored_props["services"] = self._services(job_id, workspace)
        name = job_id.rsplit("/", 1)[-1]
        for output, spec in (stored_props.get("outputs") or {}).items():  # rule: ml.job-output-uri
            if isinstance(spec, dict) and not spec.get("uri"):
                spec["uri"] = f"azureml://datastores/workspaceblobstore/paths/azureml/{name}/{output}/"
        stored["systemData"] = {"createdAt": iso(self.state.now()), "createdByType": "Application"}
        timing = self.state.timing.job
        rule = self._rule_for(job_id.rsplit("/", 1)[-1], stored_props)
        resource = self.state.put(
            job_id,
            ids.JOB,
            stored,
            queued=rule.get("queuedSeconds", timing.queued_seconds),
            running=rule.get("runningSeconds", timing.running_seconds),
            rule=rule,
            outcome=None,
            error=None,
            canceled_at=None,
            workspace=workspace.id,
            submitter=submitter,
        )
        return resource, True

    def _update_mutable(self, job: Resource, props: dict[str, Any]) -> Resource:
        for field in ("tags", "displayName", "description"):
            if field in props:
                job.properties[field] = props[field]
        return job

    def _validate(self, props: dict[str, Any], workspace_id: str) -> None:
        if props.get("jobType") not in ("Command", "Pipeline"):
            raise ArmError(400, "UserError", "Only command and pipeline jobs are supported by this sandbox.")
        steps = steps_of(props)
        for step in steps:
            self._validate_compute(step.compute_id)
        if props.get("jobType") == "Pipeline":
            if not steps:
                raise ArmError(400, "UserError", "A pipeline job needs at least one child job.")
            return
        if not props.get("environmentId"):
            raise ArmError(400, "UserError", "An environment is required for a command job.")
        for name, value in (props.get("inputs") or {}).items():
            kind = (value or {}).get("jobInputType", "")
            if kind == "literal" and value.get("value") == "":  # rule: ml.job-empty-input
                raise ArmError(400, "UserError", f"Empty string is not allowed for input value of '{name}'.")
            reference = model_ref(value.get("uri", "")) if kind.endswith("_model") else None
            if reference is None:
                continue
            model = self.state.get(f"{workspace_id}/models/{reference[0]}/versions/{reference[1]}")
            if model is None:  # rule: ml.job-model-input
                raise ArmError(400, "UserError", f"Model {reference[0]}:{reference[1]} was not found in the workspace.")
            if kind == "mlflow_model" and model.properties.get("modelType") != "mlflow_model":
                raise ArmError(
                    400,
                    "UserError",
                    f"Input '{name}' is of type mlflow_model but model "
                    f"{reference[0]}:{reference[1]} is a {model.properties.get('modelType')} (no MLmodel "
                    f"file); use type custom_model for a plain checkpoint.",
                )

    def _validate_compute(self, compute_id: str | None) -> None:
        if compute_id is None:  # rule: ml.job-serverless
            return
        compute = self.state.get(compute_id)
        if compute is None:
            raise ArmError(400, "UserError", f"Compute '{compute_id}' was not found in the workspace.")
        if compute.properties.get("provisioningState") != "Succeeded":  # rule: ml.job-compute
            raise ArmError(
                400,
                "UserError",
                f"Compute '{compute.name}' is in provisioning state "
                f"'{compute.properties.get('provisioningState')}'; it must be Succeeded to run jobs.",
            )
        if compute.properties.get("computeType") == "Kubernetes":
            self._refuse_without_training(compute)

    def _refuse_without_training(self, compute: Resource) -> None:
        cluster_id = compute.properties.get("resourceId") or ""
        extension = self.cloud.aml_extension(cluster_id)
        settings = (extension.properties.get("configurationSettings") or {}) if extension else {}
        if str(settings.get("enableTraining", "False")).lower() != "true":  # rule: ext.training-setting
            raise ArmError(
                400,
                "UserError",
                f"Compute '{compute.name}' does not support training jobs: the AzureML extension on cluster "
                f"'{cluster_id.rsplit('/', 1)[-1]}' was deployed without enableTraining=True. Update the "
                f"extension with enableTraining=True to run training jobs on it.",
            )

    def _services(self, job_id: str, workspace: Resource) -> dict[str, Any]:
        name = job_id.rsplit("/", 1)[-1]
        wsid = workspace.id
        return {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.azure.com/runs/{name}?wsid={wsid}&tid=sandbox",
            },
            "Tracking": {"jobServiceType": "Tracking", "endpoint": workspace.properties["mlFlowTrackingUri"]},
        }

    def _rule_for(self, name: str, props: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for rule in self.state.job_rules:
            match = rule.get("match", {})
            tags = props.get("tags") or {}
            if "name" in match and match["name"] != name:
                continue
            if "experiment" in match and match["experiment"] != props.get("experimentName"):
                continue
            if "displayName" in match and match["displayName"] != props.get("displayName"):
                continue
            if any(tags.get(k) != v for k, v in (match.get("tags") or {}).items()):
                continue
            if "commandContains" in match and match["commandContains"] not in (props.get("command") or ""):
                continue
            merged.update(rule.get("set", {}))
        return merged

    # -- the state machine -----------------------------------------------------------------------
    def refresh(self, job: Resource) -> Resource:
        """Bring the job's status up to now: NotStarted, Starting, Preparing, Queued, Running (or an interruption
        a job rule asks for: NotResponding or Paused, then Running again), Finalizing, then its outcome."""
        # rule: ml.job-states
        props, extra, now = job.properties, job.extra, self.state.now()
        if props.get("status") in TERMINAL_JOB_STATES:
            return job
        if extra.get("canceled_at") is not None:
            if job.id in self.executor.running:
                self._end_execution(job, self.executor.running[job.id], "Canceled", None)
            if extra.get("pod") and not extra["pod"].get("ended"):
                jobpod.end(extra["pod"]["kubeconfig"], self._pod_run(job))
                extra["pod"]["ended"] = True
            props["status"] = "Canceled" if now - extra["canceled_at"] >= 0.1 else "CancelRequested"
            if props["status"] == "Canceled":
                extra["ended"] = now
            return job
        age = now - job.created
        queued = extra["queued"]
        if extra.get("started") is None and self._unscheduled(job):  # rule: ext.cli-settings
            queued = extra["queued"] = max(queued, age + 1.0)
        if age < queued:
            props["status"] = _before_running(age, queued)
            return job
        if extra.get("pod") and extra.get("outcome") is None:
            return self._follow_pod(job)
        if extra.get("outcome") is None and job.id not in self.executor.running:
            if self._sidecar_pending(job):
                props["status"] = "Running"  # the job's pod is up; its data-capability sidecar is logging in
                return job
            extra["started"] = job.created + queued
            self._judge(job)
            if extra.get("pod"):  # it runs on the node now: the pod decides from here
                return job
        detached = self._compute_detached(job)
        if detached is not None:  # rule: ml.job-compute-detached
            return self._fail_now(job, detached)
        if job.id in self.executor.running:
            return self._follow_execution(job, self.executor.running[job.id])
        props["status"] = _while_running(age - queued, extra["running"], extra["rule"].get("interruptions") or [])
        if props["status"] == "Ended":
            late = self._outputs_unwritable(job) if extra["outcome"] == "Completed" else None
            if late is not None:
                extra["outcome"], extra["error"] = "Failed", late
            props["status"] = extra["outcome"]
            extra["ended"] = job.created + queued + _run_length(extra["running"], extra["rule"])
            if props["status"] == "Completed":
                self._write_outputs(job)
        return job

    def _image_of(self, props: dict[str, Any]) -> str:
        """The container image of a job's environment version (as registered in the workspace)."""
        environment = self.state.get(str(props.get("environmentId") or ""))
        return str((environment.properties.get("image") if environment else None) or "")

    def _unscheduled(self, job: Resource) -> bool:
        """World option rules.bareExtension=jobsStayQueued: AML's scheduler never takes a job on a cluster whose
        extension lacks the settings the CLI adds."""
        if self.state.world.rules.bare_extension != "jobsStayQueued":
            return False
        compute = self.state.get(str(job.properties.get("computeId") or ""))
        if compute is None or compute.properties.get("computeType") != "Kubernetes":
            return False
        extension = self.cloud.aml_extension(str(compute.properties.get("resourceId") or ""))
        settings = (extension.properties.get("configurationSettings") or {}) if extension else {}
        return not all(settings.get(k) for k in CLI_REGISTRATION_SETTINGS)

    def _compute_detached(self, job: Resource) -> dict[str, Any] | None:
        """A compute detached (or deleted) under a running job takes its pods with it: AML fails the job."""
        compute_id = str(job.properties.get("computeId") or "")
        if not compute_id:
            return None  # serverless
        compute = self.state.get(compute_id)
        if compute is not None and compute.properties.get("provisioningState") != "Deleting":
            return None
        return {
            "code": "UserError",
            "message": f"The compute '{compute_id.rsplit('/', 1)[-1]}' was detached while the job ran: its pods "
            "were deleted with it.",
            "details": [],
        }

    def _outputs_unwritable(self, job: Resource) -> dict[str, Any] | None:
        """Outputs go to storage through the data-capability sidecar until the job ends: a wiring that broke
        while it ran (a credential or a role removed) fails it then (rule data.outputs-at-end)."""
        props = job.properties
        compute = self.state.get(props.get("computeId") or "")
        workspace = self.state.get(job.extra["workspace"])
        if not props.get("outputs") or compute is None or workspace is None:
            return None
        if compute.properties.get("computeType") != "Kubernetes":
            return None
        problem = self.cloud.storage_access_problem(compute, workspace, True)  # rule: data.outputs-at-end
        return stream_access_error(problem, self.state.world.rules.stream_access_error) if problem else None

    def _fail_now(self, job: Resource, error: dict[str, Any]) -> Resource:
        if job.id in self.executor.running:
            self._end_execution(job, self.executor.running[job.id], "Failed", error)
            return job
        job.extra.update(outcome="Failed", error=error, ended=self.state.now())
        job.properties["status"] = "Failed"
        return job

    def _write_outputs(self, job: Resource) -> None:
        """What the job's code wrote, uploaded to each output's datastore path (rule ml.job-output-uri)."""
        files = job.extra["rule"].get("outputFiles") or self.state.timing.job.output_files
        written = {name: content.encode() for name, content in files.items()}
        for spec in (job.properties.get("outputs") or {}).values():
            self._upload(job.extra["workspace"], str((spec or {}).get("uri") or ""), written)

    def _upload(self, workspace_id: str, uri: str, files: dict[str, bytes]) -> None:
        """Files a job wrote, to the datastore path `uri` names (nothing when it names none)."""
        found = DataPath(self.cloud).datastore_at(workspace_id, uri)
        if found is None:
            return
        datastore, prefix = found
        for relative, content in files.items():
            blob = f"{prefix.rstrip('/')}/{relative}".lstrip("/")
            self.blobs.write(account_of(datastore), datastore.properties["containerName"], blob, content)

    def _judge(self, job: Resource) -> None:
        rule, props = job.extra["rule"], job.properties
        workspace = self.state.get(job.extra["workspace"])
        compute = self.state.get(props.get("computeId") or "")
        problem = None
        if workspace is not None and (compute is None or compute.properties.get("computeType") != "Kubernetes"):
            problem = self._judge_data_path(job, workspace)
        elif compute is None or workspace is None:
            problem = "the compute no longer exists"
        else:
            namespace = (compute.properties.get("properties") or {}).get("namespace") or "default"
            cluster_id = str(compute.properties.get("resourceId") or "")
            phase = self.cloud.namespace_phase(cluster_id, namespace)
            if phase != "Active":  # rule: ml.compute-namespace
                problem = f"namespace {namespace} is {'being deleted' if phase else 'missing'}"
                why = (
                    f"unable to create new content in namespace {namespace} because it is being terminated"
                    if phase
                    else f'namespaces "{namespace}" not found'
                )
                job.extra["error"] = {
                    "code": "UserError",
                    "message": f"Failed to create the job's pods: {why} in the Kubernetes cluster "
                    f"'{cluster_id.rsplit('/', 1)[-1]}' (the compute's namespace).",
                    "details": [],
                }
        if (
            problem is None
            and compute is not None
            and workspace is not None
            and (compute.properties.get("computeType") == "Kubernetes")
        ):
            pulled = self.cloud.image_pull_problem(compute, self._image_of(props))  # rule: acr.pull
            if pulled:
                problem = pulled
                job.extra["error"] = {"code": "UserError", "message": pulled, "details": []}
            elif self._needs_sidecar(props):
                problem = (job.extra.get("sidecar") or {}).get("problem") or self.cloud.storage_access_problem(
                    compute, workspace, bool(props.get("outputs"))
                )
                if problem:
                    job.extra["error"] = stream_access_error(problem, self.state.world.rules.stream_access_error)
            downloaded = self._downloaded_in_container(props)
            denied = None
            if problem is None and downloaded is not None:
                model_id = f"{workspace.id}/models/{downloaded[0]}/versions/{downloaded[1]}"
                denied = self.cloud.in_container_problem(compute, workspace, model_id)
            node = self._node_of(compute)
            if problem is None and node is not None and not rule.get("outcome") and not self._executes(job):
                self._start_pod(job, compute, node)  # rule: ml.job-on-node
                return
            if problem is None and self._executes(job):  # rule: ml.job-execution
                self._execute(job, workspace, downloaded, denied)
                return
            if denied:
                problem = denied
                job.extra["error"] = {
                    "code": "UserError",
                    "message": f"Process exited with code 1: azure.core.exceptions.ClientAuthenticationError: {denied}",
                }
        outcome = rule.get("outcome") or ("Failed" if problem else "Completed")
        if outcome == "Failed" and job.extra.get("error") is None:
            job.extra["error"] = rule.get("error") or {"code": "UserError", "message": "The job failed."}
        job.extra["outcome"] = outcome
        job.extra["metrics"] = rule.get("metrics") or self._metrics_for(props, job.extra["workspace"])

    # -- executed jobs (rule ml.job-execution) -----------------------------------------------------
    def _executes(self, job: Resource) -> bool:
        """Jobs whose command runs in the IsaacLab image, unless the world simulates them or a rule decides."""
        rule = job.extra["rule"]
        command = str(job.properties.get("command") or "")
        return self.state.world.execute_isaaclab and not rule.get("outcome") and runs_isaaclab(command)

    def _execute(
        self, job: Resource, workspace: Resource, downloaded: tuple[str, str] | None, denied: str | None
    ) -> None:
        props = job.properties
        literals, inputs = {}, {}
        for name, value in (props.get("inputs") or {}).items():
            if (value or {}).get("jobInputType") == "literal":
                literals[name] = str(value.get("value", ""))
            else:
                inputs[name] = self._input_files(workspace.id, str((value or {}).get("uri") or ""))
        outputs = {
            name: "upload" if str((spec or {}).get("mode") or "").lower() == "upload" else "rw_mount"
            for name, spec in (props.get("outputs") or {}).items()
        }
        environment = {str(k): str(v) for k, v in (props.get("environmentVariables") or {}).items()}
        environment |= {
            "MLFLOW_TRACKING_URI": str(workspace.properties.get("mlFlowTrackingUri") or ""),
            "MLFLOW_RUN_ID": job.name,
            "AZUREML_RUN_ID": job.name,
        }
        if denied:
            environment["AMLWIRE_SANDBOX_DOWNLOAD_DENIED"] = denied
        models = {downloaded: self._model_files(workspace.id, *downloaded)} if downloaded else {}
        self.executor.start(
            job.id,
            str(props.get("command") or ""),
            environment,
            literals,
            inputs,
            outputs,
            models,
            dict(job.extra["rule"].get("isaacSim") or {}),
        )
        props["status"] = "Running"

    def _follow_execution(self, job: Resource, execution: Execution) -> Resource:
        """Running while the process runs; past the job's timeout AML ends it (rule ml.job-timeout); its exit
        status decides Completed or Failed."""
        code = execution.poll()
        rule = job.extra["rule"]
        timeout = rule.get("timeoutSeconds") or duration_seconds((job.properties.get("limits") or {}).get("timeout"))
        elapsed = self.state.now() - job.extra["started"]
        interrupted = _interruption_at(elapsed, rule.get("interruptions") or [])
        if interrupted is not None:  # what AML reports meanwhile; the process runs on (and its end waits)
            job.properties["status"] = interrupted
            return job
        if code is None and timeout is not None and self.state.now() - job.extra["started"] >= float(timeout):
            # rule: ml.job-timeout
            error = {
                "code": "UserError",
                "message": f"The job ran longer than its timeout of {float(timeout):.0f} seconds (limits.timeout) and "
                "was stopped.",
                "details": [],
            }
            self._end_execution(job, execution, self.state.world.rules.job_timeout, error)
        elif code is None:
            job.properties["status"] = "Running"
        else:
            failed = exit_error(code, execution.tail()) if code != 0 else self._outputs_unwritable(job)
            self._end_execution(job, execution, "Failed" if failed else "Completed", failed)
        return job

    def _end_execution(self, job: Resource, execution: Execution, outcome: str, error: dict[str, Any] | None) -> None:
        """The process is over (or is ended now): what it logged, and its outputs in storage."""
        execution.kill(outcome)
        self.executor.running.pop(job.id, None)
        logged = execution.logged()
        extra = job.extra
        extra.update(metrics=logged["metrics"], params=logged["params"], tags=logged["tags"], log=execution.log())
        extra["outcome"], extra["ended"] = outcome, self.state.now()
        if error is not None:
            extra["error"] = error
        job.properties["status"] = outcome if extra.get("canceled_at") is None else job.properties["status"]
        for name, output in execution.outputs.items():
            if output.mode == "upload" and outcome != "Completed":
                continue  # rule: ml.job-output-uri - upload mode copies outputs only when the job completes
            spec = (job.properties.get("outputs") or {}).get(name) or {}
            self._upload(extra["workspace"], str(spec.get("uri") or ""), execution.files(name))

    def _input_files(self, workspace_id: str, uri: str) -> dict[str, bytes]:
        """What AML downloads for an input: a registered model's files, or a datastore folder's blobs."""
        found = model_ref(uri)
        if found is not None:
            return self._model_files(workspace_id, *found)
        return self._datastore_files(workspace_id, uri)

    def _datastore_files(self, workspace_id: str, uri: str) -> dict[str, bytes]:
        located = DataPath(self.cloud).datastore_at(workspace_id, uri)
        if located is None:
            return {}
        datastore, prefix = located
        stored = self.state.blobs.get(f"{account_of(datastore).lower()}/{datastore.properties['containerName']}", {})
        folder = prefix.strip("/")
        return {
            name[len(folder) :].lstrip("/"): content
            for name, (content, _) in stored.items()
            if name == folder or name.startswith(folder + "/") or not folder
        }

    def _model_files(self, workspace_id: str, name: str, version: str) -> dict[str, bytes]:
        """A model version's files: where it was registered from, or (a model the world seeds) a checkpoint of a
        policy as good as its success_rate, for the task it names."""
        model = self.state.get(f"{workspace_id}/models/{name}/versions/{version}")
        if model is None:
            return {}
        uri = str(model.properties.get("modelUri") or "")
        if uri:
            return self._datastore_files(workspace_id, uri)
        sim = sim_module()
        task = sim.TASKS.get(model.extra.get("task") or "") or sim.TASKS["Isaac-Velocity-Rough-Anymal-C-v0"]
        quality = float((model.extra.get("metrics") or {}).get("success_rate", 0.9))
        body = sim.checkpoint_body(sim.env_cfg(task), task, 1500, quality)
        return {"model_1500.pt": json.dumps(body).encode()}

    def _judge_data_path(self, job: Resource, workspace: Resource) -> str | None:
        """Compute clusters, serverless and pipelines: each step reads and writes its datastores at its start
        with the principal its identity setting names; the first denial fails the job, and a pipeline whose
        step is denied fails with no child job started."""
        path = DataPath(self.cloud)
        for step in steps_of(job.properties):
            denied = path.denied(workspace, step, job.extra.get("submitter"))
            if denied is None:
                continue
            where = f"Pipeline step '{step.name}' failed at start: " if step.name else ""  # rule: ml.pipeline-start
            job.extra["error"] = {
                "code": "UserError",
                "message": f"{where}{denied.code}: {denied.message}",
                "innerError": {"code": denied.code},
                "details": [],
            }
            return denied.message
        return None

    def _sidecar_pending(self, job: Resource) -> bool:
        """Where the compute's cluster has a node, the sidecar's login runs there as pods (rule data.sidecar-pod):
        started on the first call, followed after; False once they ended (their failure is in extra["sidecar"])
        or where nothing runs on a node."""
        extra = job.extra
        if (extra.get("sidecar") or {}).get("done"):
            return False
        compute = self.state.get(job.properties.get("computeId") or "")
        workspace = self.state.get(extra["workspace"])
        if compute is None or workspace is None or compute.properties.get("computeType") != "Kubernetes":
            return False
        node = self._node_of(compute)
        if node is None or not self._needs_sidecar(job.properties):
            return False
        cluster: Resource = node["cluster"]
        if cluster.extra["sidecar_credential"] != "workloadIdentity":
            return False
        kubeconfig = str(node["kubeconfig"])
        if "sidecar" not in extra:
            target = self._sidecar_target(cluster, workspace, node)
            if target is None:  # no identity for the sidecar to log in as: the rules judge it
                return False
            accounts = list(cluster.extra["aml_service_accounts"])
            extra["sidecar"] = {"pods": sidecar.start(kubeconfig, job.name, accounts, target)}  # rule: data.sidecar-pod
            return True
        done, problem = sidecar.outcome(kubeconfig, extra["sidecar"]["pods"])
        if not done:
            return True
        extra["sidecar"].update(done=True, problem=problem)
        sidecar.remove(kubeconfig, extra["sidecar"]["pods"])
        return False

    def _sidecar_target(
        self, cluster: Resource, workspace: Resource, node: dict[str, Any]
    ) -> sidecar.SidecarTarget | None:
        extension = self.cloud.aml_extension(cluster.id)
        settings = (extension.properties.get("configurationSettings") or {}) if extension is not None else {}
        identity = self.state.get(str(settings.get("userAssignedIdentityResourceId") or ""))
        default = DataPath(self.cloud).default_datastore(workspace.id)
        if identity is None or default is None:
            return None
        authority = str(node["authority"])
        port = urlsplit(authority).port or 443
        return sidecar.SidecarTarget(
            client_id=str(identity.properties["clientId"]),
            tenant=str(identity.properties.get("tenantId") or self.state.world.defaults.tenant_id),
            authority=authority,
            blob_host=f"{default.properties['accountName'].lower()}.blob.{STORAGE_SUFFIX}:{port}",
            blob_port=port,
            container=str(default.properties["containerName"]),
            ca_pem=str(node["caPem"]),
            image=str(node["image"]),
        )

    # -- jobs run as pods on a real node (rule ml.job-on-node) -------------------------------------------
    def _node_of(self, compute: Resource) -> dict[str, Any] | None:
        cluster = self.state.get(str(compute.properties.get("resourceId") or ""))
        node = cluster.extra.get("node") if cluster is not None else None
        return {**node, "kubeconfig": cluster.extra["kubeconfig"], "cluster": cluster} if node and cluster else None

    def _start_pod(self, job: Resource, compute: Resource, node: dict[str, Any]) -> None:
        props = job.properties
        literals = {
            name: str(value.get("value", ""))
            for name, value in (props.get("inputs") or {}).items()
            if (value or {}).get("jobInputType") == "literal"
        }
        outputs = list((props.get("outputs") or {}).keys())
        environment = {str(k): str(v) for k, v in (props.get("environmentVariables") or {}).items()}
        environment |= {"AZUREML_RUN_ID": job.name, "MLFLOW_RUN_ID": job.name}
        namespace = (compute.properties.get("properties") or {}).get("namespace") or "default"
        run = jobpod.start(
            str(node["kubeconfig"]),
            job.name,
            namespace,
            str(node["cluster"].extra["job_service_account"]),
            str(node["image"]),
            jobpod.bind(str(props.get("command") or ""), literals, outputs),
            environment,
            outputs,
        )
        job.extra["pod"] = {**run.as_extra(), "kubeconfig": str(node["kubeconfig"])}
        props["status"] = "Queued"

    def _pod_run(self, job: Resource) -> jobpod.PodRun:
        found = job.extra["pod"]
        return jobpod.PodRun(found["namespace"], found["name"], found["folder"])

    def _follow_pod(self, job: Resource) -> Resource:
        """Queued while the pod is pending, Running while it runs; its exit status decides the outcome, and what it
        wrote is uploaded as AML's uploader does."""
        run, kubeconfig = self._pod_run(job), job.extra["pod"]["kubeconfig"]
        phase, code, tail = jobpod.state(kubeconfig, run)
        if phase in ("Pending", "Running", "Unknown"):
            job.properties["status"] = "Queued" if phase == "Pending" else "Running"
            return job
        error = None if phase == "Succeeded" else exit_error(code if code is not None else 137, tail)
        if error is None:
            error = self._outputs_unwritable(job)
        outcome = "Completed" if error is None else "Failed"
        self._upload_pod_outputs(job, run, outcome)
        job.extra.update(outcome=outcome, ended=self.state.now())
        if tail:
            job.extra["log"] = tail
        if error is not None:
            job.extra["error"] = error
        job.properties["status"] = outcome
        jobpod.end(kubeconfig, run)
        job.extra["pod"]["ended"] = True
        return job

    def _upload_pod_outputs(self, job: Resource, run: jobpod.PodRun, outcome: str) -> None:
        workspace = job.extra["workspace"]
        for name, spec in (job.properties.get("outputs") or {}).items():
            if str((spec or {}).get("mode") or "").lower() == "upload" and outcome != "Completed":
                continue  # rule: ml.job-output-uri
            self._upload(workspace, str((spec or {}).get("uri") or ""), jobpod.files(run, name))
        # ./outputs: the run's artifacts, in the workspace's artifact store (ExperimentRun/dcid.<run>/outputs)
        artifacts = f"azureml://datastores/workspaceartifactstore/paths/ExperimentRun/dcid.{job.name}/outputs/"
        self._upload(workspace, artifacts, jobpod.files(run, None))

    def _needs_sidecar(self, props: dict[str, Any]) -> bool:
        inputs = [v for v in (props.get("inputs") or {}).values() if (v or {}).get("jobInputType") in DATA_INPUTS]
        return bool(inputs) or bool(props.get("outputs"))

    def _downloaded_in_container(self, props: dict[str, Any]) -> tuple[str, str] | None:
        """The model (name, version) a job downloads itself, named as a literal input or an environment variable."""
        literals = [
            str(v.get("value", ""))
            for v in (props.get("inputs") or {}).values()
            if (v or {}).get("jobInputType") == "literal"
        ]
        env = [str(v) for v in (props.get("environmentVariables") or {}).values()]
        return next((found for text in literals + env if (found := model_ref(text))), None)

    def _metrics_for(self, props: dict[str, Any], workspace_id: str) -> dict[str, float]:
        texts = [str(v.get("uri") or v.get("value") or "") for v in (props.get("inputs") or {}).values()]
        texts += [str(v) for v in (props.get("environmentVariables") or {}).values()]
        for text in texts:
            found = model_ref(text)
            if found:
                model = self.state.get(f"{workspace_id}/models/{found[0]}/versions/{found[1]}")
                if model is not None:
                    return dict(model.extra.get("metrics") or self.state.timing.job.trained_model_metrics)
        return dict(self.state.timing.job.metrics)

    def cancel(self, job: Resource) -> None:
        self.refresh(job)
        if job.properties["status"] not in TERMINAL_JOB_STATES and job.extra.get("canceled_at") is None:
            job.extra["canceled_at"] = self.state.now()
            job.properties["status"] = "CancelRequested"
            if job.id in self.executor.running:
                self._end_execution(job, self.executor.running[job.id], "Canceled", None)

    def list(self, workspace_id: str, tag: str | None = None, view: str | None = None) -> list[Resource]:
        """Jobs of the workspace in no particular order (seeded, stable across the pages of one listing); `tag`
        keeps those carrying that tag key; archived jobs only with listViewType All or ArchivedOnly. Not brought
        up to now: the caller refreshes the ones it answers with."""
        # rule: ml.job-list
        prefix = key(workspace_id) + "/jobs/"
        jobs = [r for k, r in self.state.resources.items() if k.startswith(prefix) and r.type == ids.JOB]
        if tag:
            jobs = [j for j in jobs if tag in (j.properties.get("tags") or {})]
        wanted = {"all": (True, False), "archivedonly": (True,)}.get((view or "ActiveOnly").lower(), (False,))
        jobs = [j for j in jobs if bool(j.properties.get("isArchived")) in wanted]
        seed = str(self.state.seed)
        return sorted(jobs, key=lambda r: ids.stable_uuid(seed, r.name))

    def run_details(self, job: Resource) -> dict[str, Any]:
        self.refresh(job)
        status, extra = job.properties["status"], job.extra
        details: dict[str, Any] = {
            "runId": job.name,
            "target": (job.properties.get("computeId") or "serverless").rsplit("/", 1)[-1],
            "status": status,
            "properties": {},
            "inputDatasets": [],
            "outputDatasets": [],
            "warnings": [],
            "logFiles": {"user_logs/std_log.txt": f"{self.state.base_url}/_sandbox/logs/{job.name}"},
        }
        if extra.get("started"):
            details["startTimeUtc"] = iso(extra["started"])
        if extra.get("ended"):
            details["endTimeUtc"] = iso(extra["ended"])
        if status == "Failed" and extra.get("error"):
            details["error"] = {"error": extra["error"]}
        return details

    def metrics(self, job: Resource) -> dict[str, float]:
        self.refresh(job)
        return dict(job.extra.get("metrics") or {}) if job.properties["status"] in ("Completed", "Failed") else {}

    def logged(self, job: Resource) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
        """What the job logged to MLflow so far: metrics, params and tags."""
        self.refresh(job)
        return self.metrics(job), dict(job.extra.get("params") or {}), dict(job.extra.get("tags") or {})

    def log(self, job: Resource) -> str:
        self.refresh(job)
        if job.id in self.executor.running:
            return self.executor.running[job.id].log()
        if "log" in job.extra:
            return str(job.extra["log"])
        lines = [
            f"[sandbox] job {job.name} on {(job.properties.get('computeId') or 'serverless').rsplit('/', 1)[-1]}",
            f"[sandbox] command: {job.properties.get('command', '')}",
            f"[sandbox] status: {job.properties['status']}",
        ]
        if job.extra.get("error"):
            lines.append(f"[sandbox] error: {job.extra['error']['message']}")
        return "\n".join(lines) + "\n"


def stream_access_error(problem: str, shape: str = "flat") -> dict[str, Any]:
    """A storage-access failure as AML may report it (the shape is a world option: docs/sandbox.md)."""
    # rule: data.stream-error-shape
    words = (
        f"permission denied when access stream. Reason: Some({problem}). Authentication failed when trying to "
        "access the stream"
    )
    if shape == "nested":
        inner: dict[str, Any] = {"code": "Authentication"}
        for segment in ("StreamAccess", "ScriptExecution"):
            inner = {"code": segment, "innerError": inner}
        return {"code": "UserError", "message": words, "innerError": inner, "details": []}
    if shape == "messageOnly":
        return {"code": "UserError", "message": words, "details": []}
    return {
        "code": "UserError",
        "message": f"{STREAM_AUTH}: {words}",
        "innerError": {"code": STREAM_AUTH},
        "details": [],
    }


def _interruption_at(elapsed: float, interruptions: list[dict[str, Any]]) -> str | None:
    """The status an interruption a job rule asks for ({status, after, seconds}) shows `elapsed` seconds in."""
    for interruption in interruptions:
        start = float(interruption["after"])
        if start <= elapsed < start + float(interruption["seconds"]):
            return str(interruption["status"])
    return None


CLI_REGISTRATION_SETTINGS = ("clusterId", "cluster_name", "location", "jobSchedulerLocation", "domain")


def _before_running(age: float, queued: float) -> str:
    if age < min(0.05, queued):
        return "NotStarted"
    phase = age / queued
    return "Starting" if phase < 0.25 else "Preparing" if phase < 0.5 else "Queued"


def _run_length(running: float, rule: dict[str, Any]) -> float:
    return running + sum(float(i["seconds"]) for i in rule.get("interruptions") or [])


def _while_running(elapsed: float, running: float, interruptions: list[dict[str, Any]]) -> str:
    """Running, with each interruption ({status, after, seconds}) inserted at `after` seconds of running."""
    worked = elapsed
    for interruption in sorted(interruptions, key=lambda i: float(i["after"])):
        start, seconds = float(interruption["after"]), float(interruption["seconds"])
        if worked < start:
            break
        if worked < start + seconds:
            return str(interruption["status"])
        worked -= seconds
    if worked < running * 0.9:
        return "Running"
    return "Finalizing" if worked < running else "Ended"
