"""
Job kinds of :mod:`airflow_resumable.testing.aws`: how each AWS job maps onto moto's models.

Private. One :class:`JobKind` per service: which operations submit, read and cancel its jobs,
which states it has, and how to read and write a job's state in moto's own backend objects (the
``*_backends`` dictionaries), so that moto keeps rendering every response. Nothing here patches
moto; the controller only changes the attributes moto's responses read.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing import _aws_fidelity  # noqa: F401  # registers the fidelity entries
from airflow_resumable.testing._aws_jobs_ecs import ECS_KINDS
from airflow_resumable.testing._aws_jobs_glue import GLUE_KINDS
from airflow_resumable.testing._aws_jobs_sagemaker import SAGEMAKER_KINDS
from airflow_resumable.testing._aws_jobs_sfn import SFN_KINDS
from airflow_resumable.testing._aws_kind import EPOCH, JobKind, TrackedJob
from airflow_resumable.testing._aws_realism import Listing
from airflow_resumable.testing._aws_wire import ErrorReply

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["KINDS", "JobKind", "TrackedJob", "kind_for", "kinds_of", "register_job_kind"]


class BatchJobs(JobKind):
    """AWS Batch jobs (moto's ``batch``, run through ``batch_simple``: no Docker)."""

    service = "batch"
    path = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
    succeeded, failed, cancelled = "SUCCEEDED", "FAILED", "FAILED"
    states = frozenset((*path, "SUCCEEDED", "FAILED"))
    terminal = frozenset(("SUCCEEDED", "FAILED"))
    submit_operation = "SubmitJob"
    read_operations = frozenset(("DescribeJobs",))
    cancel_operations = frozenset(("TerminateJob", "CancelJob"))
    default_failure_reason = "Essential container in task exited"
    throttle_error = (429, "TooManyRequestsException")
    listings = {
        "ListJobs": Listing("jobSummaryList", "jobId", "nextToken", "nextToken", "maxResults", 1000, 1000)
    }

    def conceal(self, call: ApiCall, body: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
        """``DescribeJobs`` leaves out the jobs it does not know (no error): so for young jobs."""
        jobs = [job for job in body.get("jobs") or [] if str(job.get("jobId")) not in hidden]
        return {**body, "jobs": jobs}

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["jobId"]), None, None)]

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [str(job).rsplit("/", 1)[-1] for job in call.body.get("jobs") or []]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(call.body.get("jobId", ""))]

    def cancel_applies(self, call: ApiCall, state: str) -> bool:
        if call.operation == "CancelJob":  # AWS: only jobs that have not started yet
            return state in ("SUBMITTED", "PENDING", "RUNNABLE")
        return state not in self.terminal

    def cancel_reason(self, call: ApiCall) -> str:
        return str(call.body.get("reason") or "Terminated by request")

    def backends(self) -> Any:
        from moto.batch.models import batch_backends

        return batch_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        return backend._jobs.get(job_id)

    def read_state(self, job: TrackedJob) -> str:
        model = self.model(job)
        return "EXPIRED" if model is None else str(getattr(model.status, "value", model.status))

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        parent = self.model(job)
        for model in [parent, *(parent._child_jobs or [])]:
            model.job_stopped = False
            model.job_stopped_reason = None
            model.exit_code = None
            model.job_stopped_at = EPOCH
            if state in ("SUBMITTED", "PENDING", "RUNNABLE"):
                model.attempts, model.latest_attempt = [], None
            elif not model.attempts:
                model.job_started_at = datetime.now()
                model.log_stream_name = model._stream_name
                model._start_attempt()
            if state in self.terminal:
                model.exit_code = 0 if state == self.succeeded else 1
                model._mark_stopped(success=state == self.succeeded)
                model.job_stopped_reason = reason or (
                    None if state == self.succeeded else self.default_failure_reason
                )
            else:
                model.status = state

    def remove(self, job: TrackedJob) -> None:
        parent = self.model(job)
        backend = self.backends()[job.account][job.region]
        for model in [parent, *(parent._child_jobs or [])]:
            backend._jobs.pop(model.job_id, None)
            if model in model.job_queue.jobs:
                model.job_queue.jobs.remove(model)


class EmrSteps(JobKind):
    """Steps of an EMR cluster; moto adds them but never runs them, and has no CancelSteps."""

    service = "emr"
    path = ("PENDING", "RUNNING")
    succeeded, failed, cancelled = "COMPLETED", "FAILED", "CANCELLED"
    states = frozenset(
        ("PENDING", "CANCEL_PENDING", "RUNNING", "COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
    )
    terminal = frozenset(("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"))
    submit_operation = "AddJobFlowSteps"
    read_operations = frozenset(("DescribeStep", "ListSteps"))
    cancel_operations = frozenset(("CancelSteps",))
    default_failure_reason = "Step failed"
    sequential = True
    not_found_error = (400, "InvalidRequestException", "Step id '{id}' is not valid.")
    listings = {"ListSteps": Listing("Steps", "Id", "Marker", "Marker", None, 50, 50)}

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        steps = call.body.get("Steps") or []
        cluster = str(call.body.get("JobFlowId"))
        return [
            (str(step_id), cluster, str(step.get("ActionOnFailure") or "TERMINATE_CLUSTER"))
            for step_id, step in zip(reply.get("StepIds") or [], steps, strict=False)
        ]

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        cluster = str(call.body.get("ClusterId"))
        if call.operation == "DescribeStep":
            return cluster, [str(call.body.get("StepId"))]
        return cluster, [str(i) for i in call.body.get("StepIds") or []] or None

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(i) for i in call.body.get("StepIds") or []]

    def cancel_reason(self, call: ApiCall) -> str:
        return "Cancelled by CancelSteps"

    def precheck(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> None:
        if call.operation != "DescribeStep":
            return
        step_id, cluster = str(call.body.get("StepId")), str(call.body.get("ClusterId"))
        job = jobs.get(step_id)
        if job is not None and job.parent == cluster and self.model(job) is None:
            raise ErrorReply(400, "InvalidRequestException", f"Step id '{step_id}' is not valid.")

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        if call.operation != "CancelSteps":
            return None
        infos = []
        for step_id in self.cancel_ids(call):
            job = jobs.get(step_id)
            if job is None or self.model(job) is None:
                infos.append({"StepId": step_id, "Status": "FAILED", "Reason": "Step not found"})
            elif job.state in self.terminal:
                infos.append({"StepId": step_id, "Status": "FAILED", "Reason": f"Step is {job.state}"})
            else:
                infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
        return {"CancelStepsInfoList": infos}

    def backends(self) -> Any:
        from moto.emr.models import emr_backends

        return emr_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        cluster = backend.clusters.get(parent)
        return None if cluster is None else next((s for s in cluster.steps if s.id == job_id), None)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        step = self.model(job)
        step.state = state
        if state == "RUNNING" and step.start_date_time is None:
            step.start()
        step.end_date_time = utcnow() if state in self.terminal else None
        step.last_state_change_reason = reason or None

    def remove(self, job: TrackedJob) -> None:
        cluster = self.backends()[job.account][job.region].clusters[job.parent]
        cluster.steps = [step for step in cluster.steps if step.id != job.job_id]


class EmrServerlessJobRuns(JobKind):
    """EMR Serverless job runs; moto ends them ``SUCCESS`` at once and ignores ``clientToken``."""

    service = "emr-serverless"
    path = ("SUBMITTED", "PENDING", "SCHEDULED", "RUNNING")
    succeeded, failed, cancelled = "SUCCESS", "FAILED", "CANCELLED"
    states = frozenset((*path, "SUCCESS", "FAILED", "CANCELLING", "CANCELLED", "QUEUED"))
    terminal = frozenset(("SUCCESS", "FAILED", "CANCELLED"))
    submit_operation = "StartJobRun"
    read_operations = frozenset(("GetJobRun",))
    cancel_operations = frozenset(("CancelJobRun",))
    default_failure_reason = "Job failed, please check complete logs in configured logging destination."
    token_conflict = (409, "ConflictException")
    not_found_error = (404, "ResourceNotFoundException", "Job run {id} does not exist.")

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["jobRunId"]), call.path_params.get("applicationId"), None)]

    def token(self, call: ApiCall) -> str | None:
        value = call.body.get("clientToken")
        return None if value is None else str(value)

    def token_scope(self, call: ApiCall) -> str:
        return call.path_params.get("applicationId", "")

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return call.path_params.get("applicationId"), [call.path_params.get("jobRunId", "")]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [call.path_params.get("jobRunId", "")]

    def backends(self) -> Any:
        from moto.emrserverless.models import emrserverless_backends

        return emrserverless_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        return next((run for run in backend.job_runs.get(parent, []) if run.id == job_id), None)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        run = self.model(job)
        run.state = state
        run.state_details = reason or None
        run.updated_at = utcnow()

    def remove(self, job: TrackedJob) -> None:
        runs = self.backends()[job.account][job.region].job_runs.get(job.parent, [])
        runs[:] = [run for run in runs if run.id != job.job_id]


class EmrContainersJobRuns(JobKind):
    """EMR on EKS job runs; moto keeps them ``RUNNING`` for ever and ignores ``clientToken``."""

    service = "emr-containers"
    path = ("PENDING", "SUBMITTED", "RUNNING")
    succeeded, failed, cancelled = "COMPLETED", "FAILED", "CANCELLED"
    states = frozenset((*path, "FAILED", "CANCELLED", "CANCEL_PENDING", "COMPLETED"))
    terminal = frozenset(("COMPLETED", "FAILED", "CANCELLED"))
    submit_operation = "StartJobRun"
    read_operations = frozenset(("DescribeJobRun",))
    cancel_operations = frozenset(("CancelJobRun",))
    default_failure_reason = "Job run failed"
    token_conflict = (400, "ValidationException")
    not_found_error = (400, "ResourceNotFoundException", "Job run {id} does not exist.")

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["id"]), call.path_params.get("virtualClusterId"), None)]

    def token(self, call: ApiCall) -> str | None:
        value = call.body.get("clientToken")
        return None if value is None else str(value)

    def token_scope(self, call: ApiCall) -> str:
        return call.path_params.get("virtualClusterId", "")

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return call.path_params.get("virtualClusterId"), [call.path_params.get("jobRunId", "")]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [call.path_params.get("jobRunId", "")]

    def backends(self) -> Any:
        from moto.emrcontainers.models import emrcontainers_backends

        return emrcontainers_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        run = backend.job_runs.get(job_id)
        return run if run is not None and (parent is None or run.virtual_cluster_id == parent) else None

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        run = self.model(job)
        run.state = state
        run.state_details = reason or None
        run.failure_reason = "USER_ERROR" if state == self.failed else None
        run.finished_at = utcnow() if state in self.terminal else None

    def remove(self, job: TrackedJob) -> None:
        self.backends()[job.account][job.region].job_runs.pop(job.job_id, None)


def _all_kinds() -> tuple[JobKind, ...]:
    return (
        BatchJobs(),
        EmrSteps(),
        EmrServerlessJobRuns(),
        EmrContainersJobRuns(),
        *ECS_KINDS,
        *GLUE_KINDS,
        *SAGEMAKER_KINDS,
        *SFN_KINDS,
    )


#: The job kinds by name (``batch``, ``emr``, ..., ``sagemaker-training``).
KINDS: dict[str, JobKind] = {kind.kind_name: kind for kind in _all_kinds()}


def register_job_kind(kind: JobKind) -> None:
    """
    Teach the controller of this process a job kind (a service the package ships no kind for).

    Idempotent: registering a kind of the same class under the same name again (a conftest
    imported twice, a module-scoped fixture per module) replaces it. Its operations must not
    overlap those of another kind of the same service. In-process servers
    (:class:`~airflow_resumable.testing.aws.MotoServer`) see it at once; a ``MotoProcess`` does
    not.

    :raises ValueError: on a name taken by a kind of another class, or an operation already taken.
    """
    existing = KINDS.get(kind.kind_name)
    if existing is not None and type(existing).__qualname__ != type(kind).__qualname__:
        raise ValueError(
            f"a job kind named {kind.kind_name!r} is already registered "
            f"({type(existing).__qualname__}, not {type(kind).__qualname__})"
        )
    taken = {
        op
        for k in KINDS.values()
        if k.service == kind.service and k.kind_name != kind.kind_name
        for op in k.operations
    }
    if overlap := sorted(taken & kind.operations):
        raise ValueError(f"operations {overlap} already belong to a {kind.service} kind")
    KINDS[kind.kind_name] = kind


def kind_for(service: str, operation: str) -> JobKind | None:
    """The kind a call of ``service`` and ``operation`` belongs to, or None (moto answers alone)."""
    return next((k for k in KINDS.values() if k.service == service and operation in k.operations), None)


def kinds_of(name_or_service: str) -> list[JobKind]:
    """The kind of that name, else every kind of that botocore service."""
    if name_or_service in KINDS:
        return [KINDS[name_or_service]]
    return [k for k in KINDS.values() if k.service == name_or_service]
