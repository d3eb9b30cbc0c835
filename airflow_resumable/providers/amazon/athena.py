"""
``ResumableAthenaOperator``: the stock ``AthenaOperator`` that keeps its query execution through
worker shutdowns, crashes and retries, and never starts it twice.

``StartQueryExecution`` deduplicates on ``ClientRequestToken`` (32 to 128 characters): the
submission token (``ar-`` and 40 hex characters) is the client request token, so a resubmission of
an intent whose id was never recorded returns that same query execution.

Written only through the public maintainer surface (``docs/maintainers.md``), as a dogfood of it.

.. versionadded:: 0.5.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.links.athena import AthenaQueryResultsLink
from airflow.providers.amazon.aws.operators.athena import AthenaOperator
from airflow.providers.amazon.aws.triggers.athena import AthenaTrigger

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    custodian_client,
    require_mapping,
    require_text,
    says_not_found,
    status_read_bound,
)
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "ResumableAthenaOperator",
    "ResumableAthenaTrigger",
    "cancel_athena_query_by_recipe",
]

SUCCEEDED = "SUCCEEDED"
#: Every state after which a query no longer runs (``QueryExecutionState``).
TERMINAL_STATES = frozenset(("SUCCEEDED", "FAILED", "CANCELLED"))
#: ``GetQueryExecution`` answers this for an id it does not know ("QueryExecution ... was not
#: found"), and for any other bad input: only one that says "not found" counts.
_NOT_FOUND = ("InvalidRequestException",)
_SERVICE = "Amazon Athena"
#: Attempts of one custodian call, the first included.


class ResumableAthenaOperator(AwsJobMixin, AthenaOperator):
    """
    Run an Amazon Athena query exactly once per intended submission and reconnect to it after any
    disruption.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.athena.AthenaOperator`
    (same arguments, the query execution id as return value, the same *Query Results* link) whose
    query survives the worker that waits for it: a retry or a reschedule after a worker shutdown
    reconnects to the query instead of starting another, and a user's stop stops it. The stock
    operator stores no id and stops the query on every kill (a deploy stops it).

    **How it works:** ``StartQueryExecution`` deduplicates on ``ClientRequestToken``
    (``submission_is_idempotent``), so the submission token is the client request token: a
    resubmission of an intent whose id was never recorded returns the same query execution, and
    a new intent (a retry after a failed query) gets a new one. ``database``, ``catalog`` and
    ``output_location`` are merged into ``query_execution_context`` and ``result_configuration``
    as in stock. ``QUEUED`` and ``RUNNING`` (and any state Athena may add) are active; only
    ``SUCCEEDED`` is a success. A ``GetQueryExecution`` answered with ``InvalidRequestException``
    (Athena's answer for an id it does not know, e.g. past its 45 days of history) raises
    :class:`~airflow_resumable.exceptions.JobNotFoundError`. Cancel is ``StopQueryExecution``.

    **Deferrable:** with ``deferrable=True`` the query execution id is recorded, then the task
    defers to :class:`ResumableAthenaTrigger` (the stock ``AthenaTrigger``, stock ``sleep_time``
    and ``max_polling_attempts``, no timeout, as in stock), which frees the worker slot while the
    query runs. Its ``on_kill`` stops the query after a user's stop, never after a clear (the
    stock trigger never stops it). ``execute_complete`` re-enters the engine: the id, or
    :class:`~airflow_resumable.exceptions.JobFailedError`.

    **Limitations:** ``client_request_token`` is replaced by the per-intent token (a fixed token
    would hand every retry the earlier, failed query; a warning is logged when it is set);
    ``max_polling_attempts`` bounds the status reads of a try's wait, as in stock (999999 by
    default); the query keeps running and a retry reconnects. A failed query raises
    :class:`~airflow_resumable.exceptions.JobFailedError` (an ``AirflowException``) with Athena's
    ``StateChangeReason``, where stock raises a bare ``AirflowException``.

    :param sleep_time: seconds between status calls of the resumable poll loop, or of the trigger
        when deferred.

    The other arguments are those of ``AthenaOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.5.0
    """

    #: Key of the bare query execution id in ``task_state_store`` (the stock operator stores none).
    #: Never rename: in-flight retries read it.
    external_id_key = "athena_query_execution_id"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "athena"

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``sleep_time``."""
        return float(self.sleep_time)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.sleep_time = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    # ------------------------------------------------------------------ spec
    def max_status_reads(self) -> tuple[int, str] | None:
        """``max_polling_attempts`` bounds the wait, as it bounds the stock poll."""
        return status_read_bound(self.max_polling_attempts, "max_polling_attempts")

    def job_request(self) -> dict[str, Any]:
        """The ``StartQueryExecution`` request of the stock ``execute``, without a token."""
        query = require_text(self.query, "query", _SERVICE)
        workgroup = require_text(self.workgroup, "workgroup", _SERVICE)
        catalog = require_text(self.catalog, "catalog", _SERVICE)
        if self.database is not None and self.database != "":
            require_text(self.database, "database", _SERVICE)
        if self.output_location:
            location = require_text(self.output_location, "output_location", _SERVICE)
            if not location.startswith("s3://"):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'output_location' must be an s3:// URI, got {location!r}; "
                    "nothing was submitted."
                )
        context = dict(
            require_mapping(self.query_execution_context, "query_execution_context", _SERVICE) or {}
        )
        results = dict(require_mapping(self.result_configuration, "result_configuration", _SERVICE) or {})
        if self.database:
            context["Database"] = self.database
        context["Catalog"] = catalog
        if self.output_location:
            results["OutputLocation"] = self.output_location
        return {
            "QueryString": query,
            "QueryExecutionContext": context,
            "ResultConfiguration": results,
            "WorkGroup": workgroup,
        }

    def prepare_try(self, context: Context) -> None:
        """The stock ``execute``'s merge of ``database``, ``catalog`` and ``output_location``."""
        if self.database:
            self.query_execution_context["Database"] = self.database
        self.query_execution_context["Catalog"] = self.catalog
        if self.output_location:
            self.result_configuration["OutputLocation"] = self.output_location
        if self.client_request_token:
            self.log.warning(
                "client_request_token is replaced by the per-intent submission token: a fixed token "
                "would hand a retry the earlier, failed query"
            )

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """``StartQueryExecution`` (the stock ``run_query``) with the submission token as client token."""
        query_execution_id = self.hook.run_query(
            self.query,
            self.query_execution_context,
            self.result_configuration,
            self.submission_token or self.client_request_token,
            self.workgroup,
        )
        self.query_execution_id = str(query_execution_id)
        return self.query_execution_id

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """
        The query's ``Status.State``.

        :raises JobNotFoundError: Athena does not know the query execution (history expired).
        """
        try:
            execution = self.hook.conn.get_query_execution(QueryExecutionId=str(external_id))
        except Exception as err:
            if says_not_found(err, _NOT_FOUND):
                raise JobNotFoundError(
                    f"{_SERVICE} query execution {external_id!r} does not exist (Athena keeps 45 days "
                    f"of history): {err}"
                ) from err
            raise
        self._last_execution = execution["QueryExecution"]
        return str(self._last_execution["Status"]["State"])

    def is_job_active(self, status: str) -> bool:
        """Anything but SUCCEEDED, FAILED and CANCELLED: a state Athena may add is waited on."""
        return status not in TERMINAL_STATES

    def is_job_succeeded(self, status: str) -> bool:
        """Only SUCCEEDED."""
        return status == SUCCEEDED

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The query execution id, as the stock ``execute`` returns; persists the link first."""
        self.adopt_job(external_id, context)
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``StopQueryExecution`` (a query that already ended is left as it is)."""
        self.hook.conn.stop_query_execution(QueryExecutionId=str(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``StopQueryExecution`` through the same connection, for the custodian."""
        return "aws_athena_query", {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name}

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The query's ``Status.StateChangeReason`` (and ``AthenaError.ErrorMessage``)."""
        execution = self.__dict__.get("_last_execution") or {}
        if execution.get("QueryExecutionId") not in (None, str(external_id)):
            return ""
        state = execution.get("Status") or {}
        reason = state.get("StateChangeReason") or (state.get("AthenaError") or {}).get("ErrorMessage")
        return str(reason or "")

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A query execution id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """``query_execution_id`` (the listeners read it) and the *Query Results* link, once per query."""
        self.query_execution_id = str(external_id)
        if self.__dict__.get("_link_for") == self.query_execution_id:
            return
        AthenaQueryResultsLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            query_execution_id=self.query_execution_id,
        )
        self._link_for = self.query_execution_id

    # ------------------------------------------------------------------ deferral
    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableAthenaTrigger:
        """The stock deferral's ``AthenaTrigger`` arguments."""
        return ResumableAthenaTrigger(
            query_execution_id=str(external_id),
            waiter_delay=self.sleep_time,
            waiter_max_attempts=self.max_polling_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            **resumable,
        )

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        """The stock event's ``value``: the query execution id."""
        value: JsonValue = event.get("value")
        return value


class ResumableAthenaTrigger(ResumableTriggerMixin, AthenaTrigger):
    """
    The stock ``AthenaTrigger``, plus an ``on_kill`` that stops the query after a user's stop.

    **Purpose:** the stock trigger has no ``on_kill`` (the stock operator's note: a deferred query
    is never cancelled). Here a user's stop stops it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``StopQueryExecution``.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        query is stopped (None: no ledger).

    The other arguments are those of ``AthenaTrigger``.

    .. versionadded:: 0.5.0
    """

    async def cancel_job(self) -> None:
        """``StopQueryExecution``."""
        query_execution_id = str(self.serialized_fields["query_execution_id"])
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            await client.stop_query_execution(QueryExecutionId=query_execution_id)
        self.log.info("Amazon Athena query execution %s stopped.", query_execution_id)


def cancel_athena_query_by_recipe(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """
    ``StopQueryExecution`` of one query (canceller ``aws_athena_query`` of the custodian).

    :param external_id: the query execution id.
    :param aws_conn_id: the Airflow connection of the operator.
    :param region_name: the operator's region.
    :raises RecipeRefusedError: no ``aws_conn_id``, or no such connection (no ambient credentials).

    .. versionadded:: 0.5.0
    """
    client = custodian_client("athena", aws_conn_id, region_name, canceller="aws_athena_query")
    client.stop_query_execution(QueryExecutionId=str(external_id))
