"""
The AWS Glue job kind of :mod:`airflow_resumable.testing.aws`: job runs of a Glue job.

Private. moto's Glue job runs go STARTING→RUNNING→SUCCEEDED through moto's state manager, whose
default for ``glue::job_run`` is ``immediate`` (every run reads SUCCEEDED at once). The kind takes
each run over when the controller starts tracking it: its ``_transitions`` become empty, so the
state manager keeps the run in whatever state the controller wrote, whatever its configuration
(the run's own data, not moto's code or shared configuration: ``configure_moto`` needs no line
for Glue). moto also lacks ``BatchStopJobRun``, lists ``GetJobRuns`` oldest first (AWS: newest
first) and never renders ``ErrorMessage``; the kind answers those three itself.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing._aws_clients import TEST_ROLE_ARN, aws_client
from airflow_resumable.testing._aws_kind import JobKind
from airflow_resumable.testing._aws_realism import Listing

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_kind import TrackedJob
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["GLUE_KINDS", "GlueJobRuns", "provision_glue"]

#: ``GetJobRuns`` pages hold at most this many runs (AWS: 200), unless ``MaxResults`` says fewer.
_PAGE_LIMIT = 200


class GlueJobRuns(JobKind):
    """
    Runs of AWS Glue jobs: ``StartJobRun``, ``GetJobRun``/``GetJobRuns``, ``BatchStopJobRun``.

    A run's parent is its job's name. ``BatchStopJobRun`` ends an active run ``STOPPED`` (AWS passes
    through ``STOPPING``; ``set_state`` can pin a run there). Glue has no idempotency token: the
    kind reports the submission token the run carries as its ``--airflow-resumable-token``
    argument as the call's ``token`` (ledger and :meth:`~.MotoControl.jobs`), but ``token_conflict``
    stays None, so a repeated token starts a second run, as on AWS.
    """

    name = "glue"
    service = "glue"
    path = ("STARTING", "RUNNING")
    succeeded, failed, cancelled = "SUCCEEDED", "FAILED", "STOPPED"
    terminal = frozenset(("SUCCEEDED", "STOPPED", "FAILED", "TIMEOUT", "ERROR", "EXPIRED"))
    states = frozenset((*path, "STOPPING", "WAITING", *terminal))
    submit_operation = "StartJobRun"
    read_operations = frozenset(("GetJobRun",))
    cancel_operations = frozenset(("BatchStopJobRun",))
    not_found_error = (400, "EntityNotFoundException", "Job run {id} not found.")
    listings = {
        "GetJobRuns": Listing("JobRuns", "Id", "NextToken", "NextToken", "MaxResults", 200, _PAGE_LIMIT)
    }
    default_failure_reason = "An error occurred while calling o84.getDynamicFrame."
    #: The run argument that carries the submission token (the operator's ``TOKEN_ARGUMENT``).
    token_argument = "--airflow-resumable-token"

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["JobRunId"]), str(call.body.get("JobName")), None)]

    def token(self, call: ApiCall) -> str | None:
        value = (call.body.get("Arguments") or {}).get(self.token_argument)
        return None if value is None else str(value)

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return str(call.body.get("JobName")), [str(call.body.get("RunId"))]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(run_id) for run_id in call.body.get("JobRunIds") or []]

    def cancel_reason(self, call: ApiCall) -> str:
        return "Job run stopped by BatchStopJobRun"

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        if call.operation == "BatchStopJobRun":
            return self._stop(call, jobs)
        if call.operation == "GetJobRun":
            job = jobs.get(str(call.body.get("RunId")))
            if job is None or job.parent != call.body.get("JobName"):
                return None
            run = self.model(job)
            return None if run is None else {"JobRun": _render(run, job)}
        if call.operation == "GetJobRuns":
            return self._list(call, jobs)
        return None

    def _stop(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any]:
        name = str(call.body.get("JobName"))
        stopped, errors = [], []
        for run_id in self.cancel_ids(call):
            job = jobs.get(run_id)
            if job is None or job.parent != name or self.model(job) is None:
                code, message = "EntityNotFoundException", f"Job run {run_id} of job {name} not found."
            elif job.state in self.terminal:
                code, message = "InvalidInputException", f"Job run {run_id} is already {job.state}."
            else:
                stopped.append({"JobName": name, "JobRunId": run_id})
                continue
            errors.append(
                {
                    "JobName": name,
                    "JobRunId": run_id,
                    "ErrorDetail": {"ErrorCode": code, "ErrorMessage": message},
                }
            )
        return {"SuccessfulSubmissions": stopped, "Errors": errors}

    def _list(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        """Every run of ``GetJobRuns``, newest first; None (moto's 404) for an unknown job."""
        name = str(call.body.get("JobName"))
        definition = next(
            (
                regions[call.region].jobs[name]
                for regions in list(self.backends().values())
                if call.region in regions and name in regions[call.region].jobs
            ),
            None,
        )
        if definition is None:
            return None
        # Every run: the controller pages the answer (``listings``: 200 at most, as documented).
        runs = list(reversed(definition.job_runs))
        return {"JobRuns": [_render(run, jobs.get(run.job_run_id)) for run in runs]}

    def backends(self) -> Any:
        from moto.glue.models import glue_backends

        return glue_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        definitions = [backend.jobs[parent]] if parent in backend.jobs else []
        if parent is None:
            definitions = list(backend.jobs.values())
        return next((run for d in definitions for run in d.job_runs if run.job_run_id == job_id), None)

    def read_state(self, job: TrackedJob) -> str:
        run = self.model(job)
        return "EXPIRED" if run is None else str(run.status)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        run = self.model(job)
        run._transitions = []  # the controller alone moves this run from now on (see the module doc)
        run.status = state
        run.modified_on = utcnow()
        if state in self.terminal:
            run.completed_on = run.modified_on

    def remove(self, job: TrackedJob) -> None:
        definition = self.backends()[job.account][job.region].jobs.get(job.parent)
        if definition is not None:
            definition.job_runs[:] = [run for run in definition.job_runs if run.job_run_id != job.job_id]


def _render(run: Any, job: TrackedJob | None) -> dict[str, Any]:
    """A run as ``GetJobRun`` renders it (timestamps as epoch seconds), plus AWS's ``ErrorMessage``."""
    rendered = {
        key: _epoch(value) if isinstance(value, datetime) else value for key, value in run.as_dict().items()
    }
    state = rendered.get("JobRunState")
    if state not in GlueJobRuns.terminal:
        rendered.pop("CompletedOn", None)  # AWS sets it once the run ended
    if job is not None and job.reason and state != GlueJobRuns.succeeded:
        rendered["ErrorMessage"] = job.reason
    return rendered


def _epoch(value: datetime) -> float:
    """moto keeps naive UTC datetimes."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def provision_glue(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable", max_concurrent_runs: int = 100
) -> str:
    """
    Create a Glue job (a Spark ETL script in S3) that may run ``max_concurrent_runs`` times at once.

    The stock operator creates a missing job with ``MaxConcurrentRuns`` =
    ``concurrent_run_limit`` (1); a provisioned job lets several tasks, or a task and a namesake,
    run it concurrently. An existing job of that name is kept.

    :param url: the controller's base url.
    :param region: the region.
    :param name: the job's name.
    :param max_concurrent_runs: the job's ``ExecutionProperty.MaxConcurrentRuns``.
    :return: the job's name.

    .. versionadded:: 0.2.0
    """

    glue = aws_client(url, "glue", region)
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):  # kept as it is
        glue.create_job(
            Name=name,
            Role=TEST_ROLE_ARN,
            Command={
                "Name": "glueetl",
                "ScriptLocation": f"s3://{name}-scripts/etl.py",
                "PythonVersion": "3",
            },
            ExecutionProperty={"MaxConcurrentRuns": max_concurrent_runs},
            GlueVersion="4.0",
            MaxRetries=0,
        )
    return name


GLUE_KINDS: tuple[JobKind, ...] = (GlueJobRuns(),)
