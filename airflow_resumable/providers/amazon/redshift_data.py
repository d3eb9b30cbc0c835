"""
``ResumableRedshiftDataOperator``: the stock ``RedshiftDataOperator`` that keeps its statement
through worker shutdowns, crashes and retries, and never runs it twice.

The stock class is built on Airflow's core ``ResumableJobMixin`` (like ``GlueJobOperator``); this
one replaces that engine with :class:`~airflow_resumable.mixin.ResumableJobMixin`.
``ExecuteStatement`` and ``BatchExecuteStatement`` deduplicate on ``ClientToken`` (1 to 64
characters): the submission token (``ar-`` and 40 hex characters) is the client token.

Written only through the public maintainer surface (``docs/maintainers.md``), as a dogfood of it.

.. versionadded:: 0.5.0
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator
from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger
from airflow.providers.common.sql.hooks.lineage import send_sql_hook_lineage

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    custodian_client,
    error_code,
    require_text,
    says_not_found,
)
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "ResumableRedshiftDataOperator",
    "ResumableRedshiftDataTrigger",
    "cancel_redshift_statement_by_recipe",
]

FINISHED = "FINISHED"
#: Every state after which a statement no longer runs (the stock ``FINISHED_STATE``, ``FAILURE_STATES``).
TERMINAL_STATES = frozenset(("FINISHED", "FAILED", "ABORTED"))
#: ``DescribeStatement`` answers for an id it does not know: ``ResourceNotFoundException``, or a
#: ``ValidationException`` that says so (the stock operator reads every ``ValidationException`` as
#: gone; the service answers it for any input that fails a constraint).
_NOT_FOUND = ("ValidationException",)
_NOT_FOUND_BY_CODE = ("ResourceNotFoundException",)
#: ``CancelStatement`` answers these for a statement it cannot cancel (ended, or unknown): the
#: statement's own status then says whether anything is left to do.
_CANCEL_REFUSED = ("ResourceNotFoundException", "ValidationException")
_SERVICE = "Amazon Redshift Data API"
_MAX_KEEP_ALIVE = 86400


class ResumableRedshiftDataOperator(AwsJobMixin, RedshiftDataOperator):
    """
    Run a Redshift Data API statement exactly once per intended submission and reconnect to it
    after any disruption.

    **Purpose:** a drop-in for
    :class:`~airflow.providers.amazon.aws.operators.redshift_data.RedshiftDataOperator` (same
    arguments, the same return value: the statement ids, or their results with
    ``return_sql_result``; the same ``session_id`` XCom) whose statement survives the worker that
    waits for it. The stock operator already reconnects through Airflow's core
    ``ResumableJobMixin`` under ``redshift_statement_id``, but it cancels the statement on every
    kill (a deploy cancels it), and a worker that dies between ``ExecuteStatement`` and storing the
    id leaves a statement no retry finds: the retry runs the SQL again.

    **How it works:** ``ExecuteStatement`` (``BatchExecuteStatement`` for a list of SQL)
    deduplicates on ``ClientToken`` (``submission_is_idempotent``), so the submission token is the
    client token: a resubmission of an intent whose id was never recorded returns the same
    statement. The call is made on the hook's client, with the stock hook's checks (exactly one of
    ``cluster_identifier``, ``workgroup_name``, ``session_id``; a UUID4 ``session_id``; a keep-alive
    of at most 24 hours) made before any call (:class:`~airflow_resumable.exceptions.InvalidJobSpecError`)
    and the stock SQL lineage sent. ``SUBMITTED``, ``PICKED`` and ``STARTED`` (and any state the
    service may add) are active; only ``FINISHED`` succeeds. A statement the service does not know
    (``ResourceNotFoundException``, or ``ValidationException`` as the stock operator reads it)
    raises :class:`~airflow_resumable.exceptions.JobNotFoundError` (the stock ``NOT_FOUND``
    pseudo-state). Cancel is ``CancelStatement``. The declared ``external_id_key`` is the stock
    ``redshift_statement_id``, so a statement the stock operator stored is adopted.

    **Deferrable:** with ``deferrable=True`` and ``wait_for_completion`` (as in stock) the statement
    id is recorded, then the task defers to :class:`ResumableRedshiftDataTrigger` (the stock
    ``RedshiftDataTrigger``, stock ``poll_interval``, ``execution_timeout`` as the deferral's
    timeout), which frees the worker slot while the statement runs. Its ``on_kill`` cancels the
    statement after a user's stop, never after a clear (the stock trigger cancels after both).

    **Limitations:** ``cancel_on_kill`` is replaced by ``cancel_on_user_stop`` (a worker shutdown
    never cancels). The ``session_id`` XCom is pushed when the statement is submitted, as in stock
    (a try that reconnects does not push it again). With ``return_sql_result``, the
    ``GetStatementResult`` calls of the result are made once, outside the engine's patient path: a
    throttled answer there fails the try (the next try adopts the finished statement). As in stock,
    only the first page of each result is returned.

    :param poll_interval: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``RedshiftDataOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.5.0
    """

    #: The stock key of the bare statement id in ``task_state_store``, declared again because our
    #: mixin's default comes first in the MRO. Never rename: in-flight retries read it.
    external_id_key = "redshift_statement_id"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "redshift_data"
    deferral_always_waits: ClassVar[bool] = False  # stock: deferrable waits only with wait_for_completion

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``poll_interval``."""
        return float(self.poll_interval)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.poll_interval = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        """The stock hook's ``ExecuteStatement`` / ``BatchExecuteStatement`` request, without a token."""
        sql = self._sql()
        targets = {
            "cluster_identifier": self.cluster_identifier,
            "workgroup_name": self.workgroup_name,
            "session_id": self.session_id,
        }
        given = sorted(name for name, value in targets.items() if value is not None)
        if len(given) != 1:
            raise InvalidJobSpecError(
                f"{_SERVICE}: exactly one of cluster_identifier, workgroup_name and session_id must be "
                f"given, got {given or 'none'}; nothing was submitted."
            )
        for name in given:
            require_text(targets[name], name, _SERVICE)
        if self.session_id is not None and not _is_uuid4(self.session_id):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'session_id' must be a UUID4, got {self.session_id!r}; nothing "
                "was submitted."
            )
        keep_alive = self.session_keep_alive_seconds
        if keep_alive is not None and (
            isinstance(keep_alive, bool)
            or not isinstance(keep_alive, int)
            or not 0 <= keep_alive <= _MAX_KEEP_ALIVE
        ):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'session_keep_alive_seconds' must be 0 to {_MAX_KEEP_ALIVE} "
                f"seconds, got {keep_alive!r}; nothing was submitted."
            )
        for name in ("database", "db_user", "secret_arn", "statement_name"):
            if getattr(self, name) is not None:
                require_text(getattr(self, name), name, _SERVICE)
        if self.parameters is not None and not isinstance(self.parameters, list):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'parameters' must be a list of {{'name', 'value'}} dicts, got "
                f"a {type(self.parameters).__name__}; nothing was submitted."
            )
        request: dict[str, Any] = {
            "ClusterIdentifier": self.cluster_identifier,
            "Database": self.database,
            "DbUser": self.db_user,
            "Parameters": self.parameters,
            "WithEvent": self.with_event,
            "SecretArn": self.secret_arn,
            "StatementName": self.statement_name,
            "WorkgroupName": self.workgroup_name,
            "SessionId": self.session_id,
            "SessionKeepAliveSeconds": keep_alive,
            ("Sqls" if isinstance(sql, list) else "Sql"): sql,
        }
        return {key: value for key, value in request.items() if value is not None}

    def _sql(self) -> str | list[str]:
        if isinstance(self.sql, list):
            if not self.sql:
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'sql' is an empty list; nothing was submitted."
                )
            return [require_text(statement, "sql", _SERVICE) for statement in self.sql]
        return require_text(self.sql, "sql", _SERVICE)

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``ExecuteStatement`` (``BatchExecuteStatement`` for a list) with ``ClientToken`` = the
        submission token; returns the statement id.

        Replaces the stock ``submit_job`` (the stock hook's ``execute_query`` takes no token): the
        stock SQL lineage is sent and the ``session_id`` XCom pushed, as the stock hook and
        operator do.
        """
        request = self.job_request()
        if self.submission_token:
            request["ClientToken"] = self.submission_token
        client = self.hook.conn
        batch = "Sqls" in request
        response = client.batch_execute_statement(**request) if batch else client.execute_statement(**request)
        self.statement_id: str = str(response["Id"])
        send_sql_hook_lineage(
            context=self.hook,
            sql="; ".join(self.sql) if isinstance(self.sql, list) else self.sql,
            sql_parameters=self.parameters or None,
            job_id=self.statement_id,
            default_db=self.database,
            extra={
                "cluster_identifier": self.cluster_identifier,
                "workgroup_name": self.workgroup_name,
                "session_id": self.session_id or response.get("SessionId"),
            },
        )
        if response.get("SessionId"):
            context["ti"].xcom_push(key="session_id", value=response["SessionId"])
        self.log.info("Redshift Data API statement submitted", statement_id=self.statement_id, batch=batch)
        return self.statement_id

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """
        The statement's ``Status``.

        :raises JobNotFoundError: the service does not know the statement (the stock ``NOT_FOUND``).
        """
        try:
            statement: dict[str, Any] = self.hook.conn.describe_statement(Id=str(external_id))
        except Exception as err:
            if says_not_found(err, _NOT_FOUND, by_code=_NOT_FOUND_BY_CODE):
                raise JobNotFoundError(
                    f"{_SERVICE} statement {external_id!r} does not exist (expired or never created): {err}"
                ) from err
            raise
        self._last_statement = statement
        return str(statement["Status"])

    def is_job_active(self, status: str) -> bool:
        """Anything but FINISHED, FAILED and ABORTED: a state the service may add is waited on."""
        return status not in TERMINAL_STATES

    def is_job_succeeded(self, status: str) -> bool:
        """Only FINISHED."""
        return status == FINISHED

    def get_job_result(self, external_id: JsonValue, context: Context) -> list[Any]:
        """
        What the stock ``execute`` returns: the statement ids (the sub-statements of a batch), or
        with ``return_sql_result`` their ``GetStatementResult`` answers.

        The stock ``get_sql_results``, reading the sub-statements from the statement the last
        status call described (no second ``DescribeStatement``).
        """
        self.adopt_job(external_id, context)
        statement = self.__dict__.get("_last_statement") or {}
        if statement.get("Id") != str(external_id):
            self.get_job_status(external_id, context)
            statement = self._last_statement
        subs = statement.get("SubStatements") or []
        ids = [str(sub["Id"]) for sub in subs] if subs else [str(external_id)]
        if not self.return_sql_result:
            return ids
        read = self.hook.conn.get_statement_result
        return [self.cloud_call(read, what="get_statement_result", Id=statement_id) for statement_id in ids]

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``CancelStatement``; a statement that already ended is left as it is."""
        _cancel_statement(self.hook.conn, str(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``CancelStatement`` through the same connection, for the custodian."""
        return "aws_redshift_data_statement", {
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The statement's ``Error``."""
        statement = self.__dict__.get("_last_statement") or {}
        return str(statement.get("Error") or "") if statement.get("Id") in (None, str(external_id)) else ""

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A statement id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """``statement_id``, which the stock ``on_kill`` and listeners read (no link, no XCom)."""
        self.statement_id = str(external_id)

    # ------------------------------------------------------------------ deferral
    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableRedshiftDataTrigger:
        """The stock deferral's ``RedshiftDataTrigger``; its ``cancel_on_kill`` is off (on_kill decides)."""
        return ResumableRedshiftDataTrigger(
            statement_id=str(external_id),
            task_id=self.task_id,
            poll_interval=self.poll_interval,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            cancel_on_kill=False,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``execution_timeout``, as the stock deferral."""
        return self.execution_timeout

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        """The stock event's ``statement_id``."""
        statement_id: JsonValue = event.get("statement_id")
        return statement_id


class ResumableRedshiftDataTrigger(ResumableTriggerMixin, RedshiftDataTrigger):
    """
    The stock ``RedshiftDataTrigger``, with an ``on_kill`` that cancels only after a user's stop.

    **Purpose:** the stock trigger's ``on_kill`` cancels the statement after any user action,
    a clear included, which cancels the very statement the next try reconnects to. Here a user's
    stop cancels it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``CancelStatement``. ``serialize()`` names this class (the stock one
    names the stock class).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        statement is cancelled (None: no ledger).

    The other arguments are those of ``RedshiftDataTrigger``.

    .. versionadded:: 0.5.0
    """

    async def cancel_job(self) -> None:
        """``CancelStatement``."""
        async with await self.hook.get_async_conn() as client:
            response = await client.cancel_statement(Id=self.statement_id)
        self.log.info(
            "Redshift Data API statement %s cancelled: %s.", self.statement_id, response.get("Status")
        )


def _is_uuid4(value: object) -> bool:
    try:
        return uuid.UUID(str(value)).version == 4
    except ValueError:
        return False


def _cancel_statement(client: Any, statement_id: str) -> None:
    """
    ``CancelStatement`` of one statement; fine when it already ended or is gone.

    :raises ResumableError: the service refused to cancel a statement that is still active.
    """
    try:
        client.cancel_statement(Id=statement_id)
    except Exception as err:
        if error_code(err) not in _CANCEL_REFUSED:
            raise
        try:
            status = str(client.describe_statement(Id=statement_id)["Status"])
        except Exception as describe_error:
            if says_not_found(describe_error, _NOT_FOUND, by_code=_NOT_FOUND_BY_CODE):
                return  # nothing left to cancel
            raise
        if status in TERMINAL_STATES:
            return
        raise ResumableError(
            f"{_SERVICE} did not cancel statement {statement_id} ({status}): {err}. Cancel it by hand."
        ) from err


def cancel_redshift_statement_by_recipe(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """
    ``CancelStatement`` of one statement (canceller ``aws_redshift_data_statement`` of the custodian).

    :param external_id: the statement id.
    :param aws_conn_id: the Airflow connection of the operator.
    :param region_name: the operator's region.
    :raises RecipeRefusedError: no ``aws_conn_id``, or no such connection (no ambient credentials).

    .. versionadded:: 0.5.0
    """
    client = custodian_client(
        "redshift-data", aws_conn_id, region_name, canceller="aws_redshift_data_statement"
    )
    _cancel_statement(client, str(external_id))
