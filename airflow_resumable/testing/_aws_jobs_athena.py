"""
The Amazon Athena job kind of :mod:`airflow_resumable.testing.aws`: query executions.

Private (the kind is used by name: ``MotoJobDriver(server, "athena")``). Written only from the
public job-kind surface (``JobKind``, ``register_job_kind``, ``ErrorReply``, ``Listing``,
``register_fidelity``), as a provider maintainer would, and registered at import with
:func:`~airflow_resumable.testing.aws.register_job_kind`.

moto runs query executions through its state manager (``athena::execution``: QUEUED→RUNNING→
SUCCEEDED, one step per ``GetQueryExecution`` by default, or at once), answers an unknown id with
a 500 (a ``KeyError``) and never renders ``StateChangeReason``. The kind takes each execution over
when the controller starts tracking it (its ``_transitions`` become empty, so the state manager
keeps whatever the controller wrote), and answers ``GetQueryExecution`` and
``StopQueryExecution`` for an unknown id with Athena's ``InvalidRequestException``.

.. versionadded:: 0.5.0
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing.aws import ErrorReply, JobKind, Listing, register_job_kind
from airflow_resumable.testing.realism import Fidelity, register_fidelity

if TYPE_CHECKING:
    from airflow_resumable.testing.aws import ApiCall, TrackedJob

__all__ = ["AthenaQueryExecutions"]

_REFERENCE = "https://docs.aws.amazon.com/athena/latest/APIReference"


class AthenaQueryExecutions(JobKind):
    """
    Athena query executions: ``StartQueryExecution``, ``GetQueryExecution``, ``StopQueryExecution``.

    ``ClientRequestToken`` deduplicates: the same token with the same request answers the first
    call's query execution again; with another request HTTP 400 ``InvalidRequestException``
    ("An error is returned if a parameter, such as QueryString, has changed"). ``StopQueryExecution``
    ends an active query ``CANCELLED`` and leaves an ended one alone.
    """

    name = service = "athena"
    path = ("QUEUED", "RUNNING")
    succeeded, failed, cancelled = "SUCCEEDED", "FAILED", "CANCELLED"
    terminal = frozenset(("SUCCEEDED", "FAILED", "CANCELLED"))
    states = frozenset((*path, *terminal))
    submit_operation = "StartQueryExecution"
    read_operations = frozenset(("GetQueryExecution",))
    cancel_operations = frozenset(("StopQueryExecution",))
    default_failure_reason = "GENERIC_INTERNAL_ERROR: the query failed"
    token_conflict = (400, "InvalidRequestException")
    throttle_error = (400, "TooManyRequestsException")
    not_found_error = (400, "InvalidRequestException", "QueryExecution {id} was not found")
    not_found_lookalike = (
        "GetQueryExecution",
        400,
        "InvalidRequestException",
        "Indicates that something is wrong with the input to the request.",
    )
    listings = {
        "ListQueryExecutions": Listing(
            "QueryExecutionIds", None, "NextToken", "NextToken", "MaxResults", 50, 50
        )
    }

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["QueryExecutionId"]), None, None)]

    def token(self, call: ApiCall) -> str | None:
        value = call.body.get("ClientRequestToken")
        return None if value is None else str(value)

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [str(call.body.get("QueryExecutionId"))]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(call.body.get("QueryExecutionId"))]

    def cancel_reason(self, call: ApiCall) -> str:
        return "Query cancelled by user"

    def precheck(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> None:
        """An unknown id is Athena's 400 ``InvalidRequestException`` (moto: a 500)."""
        if call.operation in ("GetQueryExecution", "StopQueryExecution"):
            query_id = str(call.body.get("QueryExecutionId"))
            if self._execution(call.region, query_id) is None:
                status, code, message = self.not_found_error
                raise ErrorReply(status, code, message.format(id=query_id))

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        """``GetQueryExecution`` of a tracked query, with Athena's ``StateChangeReason``."""
        if call.operation != "GetQueryExecution":
            return None
        job = jobs.get(str(call.body.get("QueryExecutionId")))
        execution = None if job is None else self.model(job)
        if job is None or execution is None:
            return None
        status: dict[str, Any] = {"State": execution.status, "SubmissionDateTime": execution.start_time}
        if execution.status in self.terminal:
            status["CompletionDateTime"] = execution.end_time
        if job.reason and execution.status != self.succeeded:
            status["StateChangeReason"] = job.reason
        return {
            "QueryExecution": {
                "QueryExecutionId": job.job_id,
                "Query": execution.query,
                "StatementType": "DML",
                "ResultConfiguration": execution.config or {},
                "QueryExecutionContext": execution.context or {},
                "Status": status,
                "WorkGroup": execution.workgroup.name if execution.workgroup else "primary",
            }
        }

    def backends(self) -> Any:
        from moto.athena.models import athena_backends

        return athena_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        return backend.executions.get(job_id)

    def read_state(self, job: TrackedJob) -> str:
        execution = self.model(job)
        return "EXPIRED" if execution is None else str(execution.status)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        execution = self.model(job)
        execution._transitions = []  # moto's state manager no longer moves it (see the module doc)
        execution.status = state
        if state in self.terminal:
            execution.end_time = time.time()

    def remove(self, job: TrackedJob) -> None:
        self.backends()[job.account][job.region].executions.pop(job.job_id, None)

    def _execution(self, region: str, query_id: str) -> Any:
        for regions in list(self.backends().values()):
            if region in regions and (execution := self.find_model(regions[region], query_id, None)):
                return execution
        return None


register_job_kind(AthenaQueryExecutions())

register_fidelity(
    Fidelity(
        "Amazon Athena",
        "visibility_lag",
        "not documented",
        "for visibility_lag seconds GetQueryExecution answers HTTP 400 InvalidRequestException for a new "
        "query and ListQueryExecutions leaves it out",
        f"{_REFERENCE}/API_GetQueryExecution.html",
        "The API reference promises no read-after-write consistency and documents no lag; the fake "
        "takes the unkind reading, and a status read during the lag does not move the query.",
    ),
    Fidelity(
        "Amazon Athena",
        "throttling",
        "reproduced",
        "calls past throttle_burst at throttle_rate a second answer HTTP 400 TooManyRequestsException; "
        "nothing is carried out",
        f"{_REFERENCE}/API_StartQueryExecution.html",
        "TooManyRequestsException: 'Indicates that the request was throttled' (HTTP 400).",
    ),
    Fidelity(
        "Amazon Athena",
        "pagination",
        "reproduced",
        "ListQueryExecutions pages with MaxResults (up to 50, 50 when not given) and an opaque "
        "NextToken; the operator never lists (the client request token finds the query)",
        f"{_REFERENCE}/API_ListQueryExecutions.html",
    ),
    Fidelity(
        "Amazon Athena",
        "expiry",
        "reproduced",
        "a finished query answers not found after realism.retention",
        f"{_REFERENCE}/API_ListQueryExecutions.html",
        "The reference: Athena keeps a query history for 45 days.",
    ),
    Fidelity(
        "Amazon Athena",
        "not_found",
        "reproduced",
        "GetQueryExecution and StopQueryExecution of an unknown id answer HTTP 400 "
        "InvalidRequestException 'QueryExecution <id> was not found'",
        f"{_REFERENCE}/API_GetQueryExecution.html",
        "The reference names InvalidRequestException for any bad input, without a message, so the "
        "contract kit's lookalike answers one with the reference's own words ('something is wrong "
        "with the input') for a query that exists: the operator takes only 'not found' for gone.",
    ),
    Fidelity(
        "Amazon Athena",
        "token_window",
        "not documented",
        "a ClientRequestToken returns its query for as long as the query is known, HTTP 400 "
        "InvalidRequestException with another request; forgotten when the query expires",
        f"{_REFERENCE}/API_StartQueryExecution.html",
        "The reference documents the replay and the error for a changed parameter, and states no "
        "window: the fake keeps the token as long as the query (45 days), the kind reading; the "
        "operator resubmits within its visibility window, minutes after the first call.",
    ),
)
