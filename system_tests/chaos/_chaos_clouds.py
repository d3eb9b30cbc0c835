"""
One view per resumable operator of the fake cloud it talks to: its jobs, status reads, cancels.

The chaos cases are written once, against :class:`CloudView`; each view reads the fake's ledger
(Databricks: :class:`~airflow_resumable.testing.databricks.FakeDatabricksClient`, AWS:
:class:`~airflow_resumable.testing.aws.MotoControlClient`) and knows how the operator's jobs are
named, so that a case finds *its* jobs among those of every case running at the same time:
each DAG run's jobs carry ``chaos-<tag>`` in their name.

Ledgers are fetched through :class:`LedgerCache` (one fetch per half second, shared by every
thread): the campaign runs many cases at once on two cores.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_resumable.testing.aws import MotoControlClient
    from airflow_resumable.testing.databricks import FakeDatabricksClient

T = TypeVar("T")

#: The clouds as they behave (issue 18), on for every chaos case: a new job is missing from list
#: and describe for ``AIRFLOW_RESUMABLE_CHAOS_LAG`` seconds (2 by default), calls past a burst of
#: 20 are throttled at 50 a second per service, lists page two items at a time.
CHAOS_REALISM = Realism.unkind(
    visibility_lag=float(os.environ.get("AIRFLOW_RESUMABLE_CHAOS_LAG", "2")),
    throttle_rate=50.0,
    throttle_burst=20,
    page_size=2,
)

#: Databricks life cycle states after which a run does nothing any more.
_DATABRICKS_TERMINAL = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
#: The tag ResumableBatchOperator puts the submission token in (``batch.TOKEN_TAG``).
_BATCH_TOKEN_TAG = "airflow-resumable-token"
#: Cancel operations of the AWS services.
_AWS_CANCELS = frozenset(
    {
        "TerminateJob",
        "CancelJob",
        "CancelJobRun",
        "CancelSteps",
        "StopTask",
        "BatchStopJobRun",
        "StopTrainingJob",
        "StopProcessingJob",
        "StopExecution",
    }
)
#: The marker ResumableEmrAddStepsOperator appends to step names (``_emr_steps._MARKER``).
_STEP_MARKER = re.compile(r" \[ar:([0-9a-f]{12}):\d+/\d+\]$")
#: The token key ``name_with_token`` appends to a job name (Step Functions, SageMaker).
_NAME_TOKEN_KEY = re.compile(r"-([0-9a-f]{12})$")


class LedgerCache(Generic[T]):
    """A ledger fetched at most every ``ttl`` seconds, whatever the number of threads asking."""

    def __init__(self, fetch: Callable[[], list[T]], ttl: float = 0.5) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._entries: list[T] = []

    def entries(self, fresh: bool = False) -> list[T]:
        """The ledger as of at most ``ttl`` seconds ago (or now, when ``fresh``)."""
        with self._lock:
            if fresh or time.monotonic() - self._at >= self._ttl:
                self._entries = self._fetch()
                self._at = time.monotonic()
            return self._entries


@dataclass(frozen=True)
class Job:
    """
    One remote job a submit call created.

    :param key: the id the operator stores (a run id, job id, or the step ids joined by ``,``).
    :param ids: the cloud's ids of the job's parts (one, except for EMR steps).
    :param label: the name that ties it to a DAG run (``chaos-<tag>[-<map index>]``).
    :param token: the submission token it was created with (groups jobs into generations).
    :param created_at: ``time.time()`` of the submit call.
    :param spec: the part of the spec the DAG reads from the Variable ``chaos_spec_<tag>``, as
        submitted (``v1`` unless a test changed it).
    """

    key: str
    ids: tuple[str, ...]
    label: str
    token: str | None
    created_at: float
    spec: str | None = None


@dataclass(frozen=True)
class Read:
    """A status call naming a job: when, and whether the fake answered it with an injected fault."""

    at: float
    injected: bool


class CloudView:
    """What a chaos case needs from the fake cloud of one operator."""

    #: The operator key of ``dags/chaos_resumable.py``.
    operator: str
    #: Cases that inject a fault into this domain's shared endpoints run alone in it.
    domain: str
    #: Whether the service deduplicates a resubmission on the token (else ``find_job``).
    idempotent: bool

    def conf(self, tag: str) -> dict[str, Any]:
        """The DAG run conf for a case tagged ``tag`` (resources are created here when needed)."""
        raise NotImplementedError

    def jobs(self, label_prefix: str) -> list[Job]:
        """Jobs created by submit calls whose name starts with ``label_prefix``, oldest first."""
        raise NotImplementedError

    def submit_calls(self, label_prefix: str) -> int:
        """Every submit call for such jobs (replays of a token and failed calls included)."""
        raise NotImplementedError

    def reads(self, job: Job) -> list[Read]:
        """The status calls naming ``job``, oldest first."""
        raise NotImplementedError

    def cancelled(self, job: Job) -> bool:
        """Whether a cancel call for ``job`` took effect."""
        return self.cancelled_at(job) is not None

    def cancelled_at(self, job: Job) -> float | None:
        """``time.time()`` (the fake's clock) of the first cancel call for ``job`` that took effect."""
        return next(iter(self.cancels(job)), None)

    def cancels(self, job: Job) -> list[float]:
        """When each cancel call for ``job`` that took effect arrived (``time.time()``), oldest first."""
        raise NotImplementedError

    def active(self, job: Job) -> bool:
        """Whether ``job`` still runs (neither finished, failed nor cancelled)."""
        raise NotImplementedError

    def finish(self, job: Job) -> None:
        """Let ``job`` end successfully (the remote work is done)."""
        raise NotImplementedError

    def storm(self, count: int) -> None:
        """Answer the next ``count`` status calls of this domain with HTTP 500."""
        raise NotImplementedError

    def clear_faults(self) -> None:
        """Remove what :meth:`storm` or :meth:`lose_submit_response` left unconsumed."""
        raise NotImplementedError

    def lose_submit_response(self) -> None:
        """Carry out this operator's next submit call, then answer it with HTTP 500 (a lost response)."""
        raise NotImplementedError

    def lost_responses(self, label_prefix: str) -> int:
        """Submit calls for such jobs that created a job and answered an injected 500."""
        raise NotImplementedError


class DatabricksView(CloudView):
    """Submit-run (jobs named by ``run_name``) or run-now (named by ``notebook_params.tag``)."""

    domain = "databricks"
    idempotent = True

    def __init__(self, operator: str, client: FakeDatabricksClient, ledger: LedgerCache[Any]) -> None:
        self.operator = operator
        self.client = client
        self.ledger = ledger
        self.endpoint = "run-now" if operator == "databricks_run_now" else "runs/submit"

    def conf(self, tag: str) -> dict[str, Any]:
        conf: dict[str, Any] = {"tag": tag}
        if self.endpoint == "run-now":
            conf["job_id"] = self.client.create_job(f"chaos-{tag}")
        return conf

    def _label(self, body: dict[str, Any]) -> str:
        if self.operator == "databricks_notebook":  # its run_name is the fixed databricks_task_key
            return _dig(body, "notebook_task", "base_parameters", "tag") or ""
        if self.endpoint == "runs/submit":
            return str(body.get("run_name") or "")
        return f"chaos-{(body.get('notebook_params') or {}).get('tag', '')}"

    def _submits(self, label_prefix: str) -> list[Any]:
        return [
            e
            for e in self.ledger.entries()
            if e.endpoint == self.endpoint and self._label(e.body).startswith(label_prefix)
        ]

    def jobs(self, label_prefix: str) -> list[Job]:
        return [
            Job(
                str(e.run_id),
                (str(e.run_id),),
                self._label(e.body),
                e.body.get("idempotency_token"),
                e.timestamp,
                _dig(e.body, *_SPEC_PATHS[self.operator]),
            )
            for e in self._submits(label_prefix)
            if e.created and e.run_id is not None
        ]

    def submit_calls(self, label_prefix: str) -> int:
        return len(self._submits(label_prefix))

    def reads(self, job: Job) -> list[Read]:
        return [
            Read(e.timestamp, e.injected)
            for e in self.ledger.entries()
            if e.endpoint == "runs/get" and str(e.run_id) == job.key
        ]

    def cancels(self, job: Job) -> list[float]:
        return [
            e.timestamp
            for e in self.ledger.entries()
            if e.endpoint == "runs/cancel" and e.handled and str(e.run_id) == job.key
        ]

    def active(self, job: Job) -> bool:
        return self.client.get_run(int(job.key))["state"]["life_cycle_state"] not in _DATABRICKS_TERMINAL

    def finish(self, job: Job) -> None:
        self.client.finish_run(int(job.key), "SUCCESS")

    def storm(self, count: int) -> None:
        self.client.inject_fault("runs/get", 500, count=count)

    def clear_faults(self) -> None:
        self.client.clear_faults()

    def lose_submit_response(self) -> None:
        self.client.inject_fault(self.endpoint, 500, after_handling=True)

    def lost_responses(self, label_prefix: str) -> int:
        return sum(1 for e in self._submits(label_prefix) if e.injected and e.created)


@dataclass(frozen=True)
class AwsShape:
    """
    How one AWS operator's jobs look in the controller's ledger.

    :param service: the botocore service of its calls.
    :param submit: the operation that creates its jobs; ``status``: the one the operator polls with.
    :param label: the job's name (``chaos-<tag>...``) from a submit call's request.
    :param spec: where the ``chaos_spec_<tag>`` part of the spec sits in that request.
    :param token: the submission token from a submit ledger entry (default: the entry's token).
    :param idempotent: whether the service deduplicates a resubmission (else ``find_job``).
    """

    service: str
    submit: str
    status: str
    label: Callable[[dict[str, Any]], str]
    spec: tuple[str | int, ...]
    token: Callable[[Any], str | None] = lambda entry: entry.token
    idempotent: bool = False


def _step_label(request: dict[str, Any]) -> str:
    steps = request.get("Steps") or [{}]
    return _STEP_MARKER.sub("", str(steps[0].get("Name", "")))


def _step_token(request: dict[str, Any]) -> str | None:
    steps = request.get("Steps") or [{}]
    match = _STEP_MARKER.search(str(steps[0].get("Name", "")))
    return match.group(1) if match else None


AWS_SHAPES = {
    "batch": AwsShape(
        "batch",
        "SubmitJob",
        "DescribeJobs",
        lambda r: str(r.get("jobName", "")),
        ("parameters", "spec"),
        token=lambda e: (e.request.get("tags") or {}).get(_BATCH_TOKEN_TAG),
    ),
    "emr_serverless": AwsShape(
        "emr-serverless",
        "StartJobRun",
        "GetJobRun",
        lambda r: str(r.get("name", "")),
        ("jobDriver", "sparkSubmit", "entryPointArguments", -1),
        idempotent=True,
    ),
    "emr_containers": AwsShape(
        "emr-containers",
        "StartJobRun",
        "DescribeJobRun",
        lambda r: str(r.get("name", "")),
        ("jobDriver", "sparkSubmitJobDriver", "entryPointArguments", -1),
        idempotent=True,
    ),
    "emr_steps": AwsShape(
        "emr",
        "AddJobFlowSteps",
        "ListSteps",
        _step_label,
        ("Steps", 0, "HadoopJarStep", "Args", -1),
        token=lambda e: _step_token(e.request),
    ),
    "ecs": AwsShape(
        "ecs",
        "RunTask",
        "DescribeTasks",
        lambda r: str(r.get("group", "")),
        ("overrides", "containerOverrides", 0, "command", -1),
        idempotent=True,
    ),
    "glue": AwsShape(
        "glue", "StartJobRun", "GetJobRun", lambda r: str(r.get("JobName", "")), ("Arguments", "--spec")
    ),
    "sagemaker_training": AwsShape(
        "sagemaker",
        "CreateTrainingJob",
        "DescribeTrainingJob",
        lambda r: _NAME_TOKEN_KEY.sub("", str(r.get("TrainingJobName", ""))),
        ("HyperParameters", "spec"),
        idempotent=True,
    ),
    "sagemaker_processing": AwsShape(
        "sagemaker",
        "CreateProcessingJob",
        "DescribeProcessingJob",
        lambda r: _NAME_TOKEN_KEY.sub("", str(r.get("ProcessingJobName", ""))),
        ("Environment", "SPEC"),
        idempotent=True,
    ),
    "step_function": AwsShape(
        "stepfunctions",
        "StartExecution",
        "DescribeExecution",
        lambda r: _NAME_TOKEN_KEY.sub("", str(r.get("name", ""))),
        ("input", "spec"),
        idempotent=True,
    ),
}


def _dig(value: Any, *path: str | int) -> str | None:
    """``value[path[0]][path[1]]...`` as a string (JSON strings parsed), or None if a step is missing."""
    for step in path:
        try:
            if isinstance(value, str) and isinstance(step, str):
                value = json.loads(value)  # Step Functions' input is a JSON document in a string
            value = value[step]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return None if value is None else str(value)


#: Where the Variable part of the spec (``dags/chaos_resumable.py``: ``SPEC``) is in a submit call.
_SPEC_PATHS: dict[str, tuple[str | int, ...]] = {
    "databricks_submit_run": ("tasks", 0, "notebook_task", "base_parameters", "spec"),
    "databricks_run_now": ("notebook_params", "spec"),
    "databricks_notebook": ("notebook_task", "base_parameters", "spec"),
}


def _names(entry: Any, ids: tuple[str, ...]) -> bool:
    """Whether a ledger entry is about one of ``ids`` (a refused call names them in its request only)."""
    if set(ids) & set(entry.job_ids):
        return True
    request = str(entry.request)
    return any(job_id in request for job_id in ids)


class AwsView(CloudView):
    """One of the four AWS operators, against the moto lifecycle controller."""

    def __init__(
        self,
        operator: str,
        control: MotoControlClient,
        ledger: LedgerCache[Any],
        resources: dict[str, Any],
        new_cluster: Callable[[str], str],
    ) -> None:
        self.operator = operator
        self.control = control
        self.ledger = ledger
        self.shape = AWS_SHAPES[operator]
        self.domain = f"aws:{self.shape.service}"
        self.idempotent = self.shape.idempotent
        self.resources = resources
        self.new_cluster = new_cluster

    def conf(self, tag: str) -> dict[str, Any]:
        conf = {"tag": tag, **self.resources}
        if self.operator == "emr_steps":
            conf["job_flow_id"] = self.new_cluster(f"chaos-{tag}")  # steps of one cluster run one by one
        return conf

    def _submits(self, label_prefix: str) -> list[Any]:
        shape = self.shape
        return [
            e
            for e in self.ledger.entries()
            if e.service == shape.service
            and e.operation == shape.submit
            and shape.label(e.request).startswith(label_prefix)
        ]

    def jobs(self, label_prefix: str) -> list[Job]:
        return [
            Job(
                ",".join(e.created),
                tuple(e.created),
                self.shape.label(e.request),
                self.shape.token(e),
                e.at,
                _dig(e.request, *self.shape.spec),
            )
            for e in self._submits(label_prefix)
            if e.created
        ]

    def submit_calls(self, label_prefix: str) -> int:
        return len(self._submits(label_prefix))

    def reads(self, job: Job) -> list[Read]:
        shape = self.shape
        return [
            Read(e.at, e.fault is not None)
            for e in self.ledger.entries()
            if e.service == shape.service and e.operation == shape.status and _names(e, job.ids)
        ]

    def cancels(self, job: Job) -> list[float]:
        return [
            e.at
            for e in self.ledger.entries()
            if e.service == self.shape.service
            and e.operation in _AWS_CANCELS
            and e.handled
            and (e.status < 300 or e.fault == "after")
            and set(job.ids) & set(e.job_ids)
        ]

    def active(self, job: Job) -> bool:
        return any(not self.control.job(job_id)["finished"] for job_id in job.ids)

    def finish(self, job: Job) -> None:
        for job_id in job.ids:
            if not self.control.job(job_id)["finished"]:
                self.control.finish(job_id, succeeded=True)

    def storm(self, count: int) -> None:
        self.control.inject_fault(self.shape.status, 500, count=count, service=self.shape.service)

    def clear_faults(self) -> None:
        self.control.clear_faults()

    def lose_submit_response(self) -> None:
        self.control.lose_response(self.shape.submit, service=self.shape.service)

    def lost_responses(self, label_prefix: str) -> int:
        return sum(1 for e in self._submits(label_prefix) if e.fault == "after" and e.created)
