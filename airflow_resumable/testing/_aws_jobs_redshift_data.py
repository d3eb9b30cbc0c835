"""
The Amazon Redshift Data API job kind of :mod:`airflow_resumable.testing.aws`: statements.

Private (the kind is used by name: ``MotoJobDriver(server, "redshift-data")``). Written only from
the public job-kind surface (``JobKind``, ``register_job_kind``, ``ErrorReply``,
``register_fidelity``), as a provider maintainer would, and registered at import with
:func:`~airflow_resumable.testing.aws.register_job_kind`.

moto keeps every statement ``STARTED`` for ever, ignores ``ClientToken``, never renders ``Error``,
cancels only a ``STARTED`` statement and has no ``BatchExecuteStatement`` nor ``ListStatements``.
The controller gives statements a lifecycle (SUBMITTED→PICKED→STARTED, then ``finish``) and token
replays; the kind answers ``DescribeStatement`` (with the statement's ``Error``) and
``CancelStatement`` itself.

Not modelled: ``BatchExecuteStatement`` (a kind has one submit operation, and its reads and cancels
belong to ``ExecuteStatement``'s kind), so the kit runs the operator with one SQL string.

.. versionadded:: 0.5.0
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing.aws import ErrorReply, JobKind, register_job_kind
from airflow_resumable.testing.realism import Fidelity, register_fidelity

if TYPE_CHECKING:
    from airflow_resumable.testing.aws import ApiCall, TrackedJob

__all__ = ["RedshiftDataStatements"]

_REFERENCE = "https://docs.aws.amazon.com/redshift-data/latest/APIReference"


class RedshiftDataStatements(JobKind):
    """
    Redshift Data API statements: ``ExecuteStatement``, ``DescribeStatement``, ``CancelStatement``.

    ``ClientToken`` deduplicates: the same token with the same request answers the first call's
    statement again. The reference states no answer for a token reused with another request; the
    kind answers HTTP 400 ``ValidationException`` (the unkind choice: an operator that reused a
    token for another SQL fails loudly instead of being handed the first statement).
    ``CancelStatement`` ends an active statement ``ABORTED`` in any active state (the reference:
    "to be canceled, a query must be running"; the kind takes SUBMITTED and PICKED for running) and
    answers ``ValidationException`` for one that ended, as moto does.
    """

    name = service = "redshift-data"
    path = ("SUBMITTED", "PICKED", "STARTED")
    succeeded, failed, cancelled = "FINISHED", "FAILED", "ABORTED"
    terminal = frozenset(("FINISHED", "FAILED", "ABORTED"))
    states = frozenset((*path, *terminal))
    submit_operation = "ExecuteStatement"
    read_operations = frozenset(("DescribeStatement",))
    cancel_operations = frozenset(("CancelStatement",))
    extra_operations = frozenset(("GetStatementResult",))  # throttled like the others (realism)
    default_failure_reason = 'ERROR: relation "events" does not exist'
    token_conflict = (400, "ValidationException")
    not_found_error = (400, "ResourceNotFoundException", "Query does not exist.")
    not_found_lookalike = (
        "DescribeStatement",
        400,
        "ValidationException",
        "The input fails to satisfy the constraints specified by an AWS service.",
    )

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["Id"]), None, None)]

    def token(self, call: ApiCall) -> str | None:
        value = call.body.get("ClientToken")
        return None if value is None else str(value)

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [str(call.body.get("Id"))]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(call.body.get("Id"))]

    def cancel_reason(self, call: ApiCall) -> str:
        return "Query cancelled by CancelStatement"

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        """``DescribeStatement`` with ``Error``, and ``CancelStatement``, of a tracked statement."""
        if call.operation not in ("DescribeStatement", "CancelStatement"):
            return None
        job = jobs.get(str(call.body.get("Id")))
        statement = None if job is None else self.model(job)
        if job is None or statement is None:
            return None  # moto's own answer (ResourceNotFoundException or ValidationException)
        if call.operation == "CancelStatement":
            if statement.status in self.terminal:
                raise ErrorReply(
                    400,
                    "ValidationException",
                    f"Could not cancel a query that is already in {statement.status} state with ID: "
                    f"{job.job_id}",
                )
            return {"Status": True}
        described = dict(statement)
        if job.reason and statement.status != self.succeeded:
            described["Error"] = job.reason
        return described

    def backends(self) -> Any:
        from moto.redshiftdata.models import redshiftdata_backends

        return redshiftdata_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        return backend.statements.get(job_id)

    def read_state(self, job: TrackedJob) -> str:
        statement = self.model(job)
        return "EXPIRED" if statement is None else str(statement.status)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        statement = self.model(job)
        statement.status = state
        statement.updated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def remove(self, job: TrackedJob) -> None:
        self.backends()[job.account][job.region].statements.pop(job.job_id, None)


register_job_kind(RedshiftDataStatements())

_SERVICE = "Redshift Data API"
register_fidelity(
    Fidelity(
        _SERVICE,
        "visibility_lag",
        "not documented",
        "for visibility_lag seconds DescribeStatement answers HTTP 400 ResourceNotFoundException for a "
        "new statement",
        f"{_REFERENCE}/API_DescribeStatement.html",
        "The API reference promises no read-after-write consistency and documents no lag; the fake "
        "takes the unkind reading, and a status read during the lag does not move the statement.",
    ),
    Fidelity(
        _SERVICE,
        "throttling",
        "reproduced",
        "calls past throttle_burst at throttle_rate a second answer HTTP 400 ThrottlingException; "
        "nothing is carried out",
        f"{_REFERENCE}/CommonErrors.html",
    ),
    Fidelity(
        _SERVICE,
        "pagination",
        "not reproduced",
        "no list call: moto has no ListStatements, and the operator never lists (the client token "
        "finds the statement)",
        f"{_REFERENCE}/API_ListStatements.html",
    ),
    Fidelity(
        _SERVICE,
        "expiry",
        "not documented",
        "a finished statement answers not found after realism.retention",
        "",
        "The API reference states no retention for DescribeStatement; with realism.retention the fake "
        "forgets a finished statement that long after it ended (not found: expired, for the operator).",
    ),
    Fidelity(
        _SERVICE,
        "not_found",
        "reproduced",
        "DescribeStatement of an unknown id answers HTTP 400 ResourceNotFoundException 'Query does not "
        "exist.'",
        f"{_REFERENCE}/API_DescribeStatement.html",
        "The stock operator also reads every ValidationException as not found; ours only one that "
        "says so ('does not exist', 'not found'): the reference's ValidationException is any input "
        "that fails a constraint, which the contract kit's lookalike answers for a statement that exists.",
    ),
    Fidelity(
        _SERVICE,
        "token_window",
        "not documented",
        "a ClientToken returns its statement for as long as the statement is known; with another "
        "request, HTTP 400 ValidationException; forgotten when the statement expires",
        f"{_REFERENCE}/API_ExecuteStatement.html",
        "The reference asks for a unique token of 1 to 64 characters and states neither a window nor "
        "the answer to a reused token with another request: the fake answers ValidationException, "
        "the unkind choice (the first statement handed back would hide the operator's mistake).",
    ),
)
