"""
``ResumableGlueJobOperator``: the stock ``GlueJobOperator`` that keeps its Glue job run through
worker shutdowns, crashes and retries, and never starts it twice.

The stock class is itself built on Airflow's core ``ResumableJobMixin``; this one replaces that
engine with :class:`~airflow_resumable.mixin.ResumableJobMixin` (which keeps the core contract),
and is the model for subclassing any stock operator that already uses the core mixin (see the
class docstring). ``StartJobRun`` has no idempotency token, so the run carries the submission token
as a run argument and :meth:`ResumableGlueJobOperator.find_job` finds it again by that argument.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.glue import GlueJobHook
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.triggers.glue import GlueJobCompleteTrigger
from airflow.providers.common.compat.openlineage.utils.spark import (
    inject_parent_job_information_into_glue_arguments,
    inject_transport_information_into_glue_arguments,
)

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon._cancel import cancel_client
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    error_code,
    find_in_pages,
    no_retry_client,
    require_mapping,
    require_text,
)
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "TOKEN_ARGUMENT",
    "ResumableGlueJobCompleteTrigger",
    "ResumableGlueJobOperator",
    "cancel_glue_job_run_by_recipe",
]

#: Run argument that carries the submission token on every run. Never rename: find_job of in-flight
#: retries looks for it.
TOKEN_ARGUMENT = "--airflow-resumable-token"
SUCCEEDED = "SUCCEEDED"
#: Every state after which a run no longer runs (the stock ``JOB_RUN_TERMINAL_STATES``).
TERMINAL_STATES = frozenset(("SUCCEEDED", "STOPPED", "FAILED", "TIMEOUT", "ERROR", "EXPIRED"))
_NOT_FOUND = "EntityNotFoundException"
#: ``StartJobRun`` keywords the operator sets itself from ``job_name`` and ``script_args``.
_RESERVED_RUN_KWARGS = ("JobName", "Arguments")
_FIND_MAX_RUNS = 1000  # GetJobRuns lists newest first: the run of an intent is among the newest
_PAGE_SIZE = 200  # GetJobRuns' largest page
_SERVICE = "AWS Glue"


class ResumableGlueJobOperator(AwsJobMixin, GlueJobOperator):
    """
    Run an AWS Glue job exactly once per intended submission and reconnect to it after any disruption.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.glue.GlueJobOperator`
    (same arguments, the job run id as return value, the same ``glue_job_run_id`` XCom and run
    link) whose run survives the worker that waits for it. The stock operator already reconnects
    through Airflow's core ``ResumableJobMixin``, but it stops its run on every SIGTERM when
    ``stop_job_run_on_kill`` is set (a deploy kills the run), and a worker that dies between
    ``StartJobRun`` and storing the run id leaves a run no retry finds (a duplicate). Here a worker
    shutdown is a checkpoint, a user's stop stops the run, and the id gap is closed by a token.

    **How it works:** ``StartJobRun`` has no idempotency token, so ``submission_is_idempotent``
    is False: the run gets the argument ``--airflow-resumable-token=<submission token>`` next to
    ``script_args`` (the name is reserved), and :meth:`find_job` pages ``GetJobRuns`` of the job
    (newest first, up to 1,000 runs) for the run whose ``Arguments`` carry this very token, never
    just the newest run of the job, which may be another task's. It runs whenever an earlier try
    may have started the run without recording its id, and before every resubmission.
    ``StartJobRun`` goes through a client with botocore's retries turned off. The job is created
    (or, with ``update_config``, updated) first, as in stock. Cancel is ``BatchStopJobRun``.
    ``STARTING``, ``RUNNING``, ``STOPPING``, ``WAITING`` (and any state Glue may add) are active;
    only ``SUCCEEDED`` is a success (``STOPPED`` fails, as in the stock operator).

    **Subclassing a stock operator that already uses the core mixin** (this class is the model):

    - Bases: ``class ResumableX(AwsJobMixin, StockX)``, the resumable mixin first. The MRO is
      then ``ResumableX, AwsJobMixin, ResumableJobMixin, StopHandlingMixin, StockX,
      core ResumableJobMixin, ...``: ``execute``, ``execute_complete``, ``execute_resumable``,
      ``poll_until_complete`` and ``on_kill`` come from the resumable classes. The other way
      round the stock ``execute`` (its own deferral), the stock poll loop and the stock
      ``on_kill`` win and the engine never runs
      (:func:`~airflow_resumable.testing.contract.check_operator_class` refuses such a class).
    - The stock hooks: the core mixin's six hooks that our mixin does not define
      (``submit_job``, ``get_job_status``, ``is_job_active``, ``is_job_succeeded``,
      ``get_job_result``) resolve to the stock class, so each is overridden here: the stock ones
      assume the stock engine (a status read that pushes XComs, a ``submit_job`` that scans for
      its own earlier run). Those our mixin does define (``poll_until_complete``,
      ``find_job``, ``cancel_job``, ``is_valid_external_id``) shadow the stock ones.
    - ``external_id_key``: our mixin's default (``remote_job_id``) comes before the stock
      class in the MRO and would hide the stock ``glue_job_run_id``: it is declared again here,
      so a run id the stock operator stored is adopted, and the bare id we mirror is what the
      stock class reads if the class is swapped back.
    - Pseudo-states: the stock ``get_job_status`` answers ``NOT_FOUND`` for a run Glue no
      longer knows, and the core mixin then resubmits. Here :meth:`get_job_status` raises
      :class:`~airflow_resumable.exceptions.JobNotFoundError` instead: the engine submits the next
      generation, and the poll loop never mistakes a forgotten run for a failed one.
    - The stock deferrable path (submit, then defer to ``GlueJobCompleteTrigger`` with no id in
      ``task_state_store``, and ``execute_complete`` that trusts the event) is not used:
      ``AwsJobMixin.execute`` records the id first and ``execute_complete`` re-reads the run.
      The stock ``--airflow_task_uuid`` argument and its ``GetJobRuns`` scan are replaced by the
      token argument; the stock ``on_kill`` (``stop_job_run_on_kill``) never runs.

    **Deferrable:** with ``deferrable=True`` the run id is recorded, then the task defers to
    :class:`ResumableGlueJobCompleteTrigger` (the stock ``GlueJobCompleteTrigger`` with the stock
    ``verbose``, ``waiter_delay`` and ``waiter_max_attempts``, no timeout, as in stock), which
    frees the worker slot while the run runs; as in stock it waits even with
    ``wait_for_completion=False``. Its ``on_kill`` stops the run after a user's stop, never after
    a clear. ``execute_complete`` re-enters the engine: the run id, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try and the next one reconnects.

    **Limitations:** ``stop_job_run_on_kill`` has no effect (``cancel_on_user_stop`` and
    ``cancel_on_timeout`` decide; a worker shutdown never stops the run); ``job_poll_interval``
    is the interval of the resumable poll loop; a run started by the *deferrable* stock operator
    (which stores no id) is not adopted after a class swap. ``verbose`` prints the CloudWatch
    lines at every poll as in stock; a failure to read them only warns. With OpenLineage
    injection on, a resubmission on a later try carries that try's lineage arguments. Runs older
    than the newest 1,000 of the job are not searched. The token argument reaches the script
    (``getResolvedOptions`` ignores it); a ``NonOverridableArguments`` entry of that name on the
    job would hide it.

    :param job_poll_interval: seconds between status calls of the resumable poll loop.
    :param waiter_delay: seconds between status calls of the trigger when deferred.

    The other arguments are those of ``GlueJobOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.2.0
    """

    #: The stock key of the bare run id in ``task_state_store``, declared again because our
    #: mixin's default comes first in the MRO. Never rename: in-flight retries read it.
    external_id_key = "glue_job_run_id"
    submission_is_idempotent: ClassVar[bool] = False
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "glue"

    _log_tokens: GlueJobHook.LogContinuationTokens | None = None

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``job_poll_interval``."""
        return float(self.job_poll_interval)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.job_poll_interval = seconds

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        name = require_text(self.job_name, "job_name", _SERVICE)
        if len(name) > 255 or "\n" in name:
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'job_name' must be one line of at most 255 characters; "
                f"nothing was submitted."
            )
        arguments = dict(require_mapping(self.script_args, "script_args", _SERVICE) or {})
        for key, value in arguments.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'script_args' must map strings to strings (Glue run "
                    f"arguments), got {type(key).__name__} {key!r} → {type(value).__name__}; "
                    f"nothing was submitted."
                )
        if TOKEN_ARGUMENT in arguments:
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'script_args' may not set {TOKEN_ARGUMENT!r}, which is "
                f"reserved for airflow_resumable; nothing was submitted."
            )
        run_kwargs = dict(require_mapping(self.run_job_kwargs, "run_job_kwargs", _SERVICE) or {})
        reserved = sorted(set(run_kwargs) & set(_RESERVED_RUN_KWARGS))
        if reserved:
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'run_job_kwargs' may not set {reserved}: use job_name and "
                f"script_args; nothing was submitted."
            )
        create_kwargs = require_mapping(self.create_job_kwargs, "create_job_kwargs", _SERVICE)
        spec: dict[str, Any] = {"JobName": name, "Arguments": arguments, **run_kwargs}
        if self.update_config:  # the job definition is rewritten before the run: part of the spec
            spec["JobDefinition"] = {
                "ScriptLocation": self.script_location,
                "CreateJobKwargs": dict(create_kwargs or {}),
                "NumOfDpus": self.num_of_dpus,
                "RetryLimit": self.retry_limit,
                "ConcurrentRunLimit": self.concurrent_run_limit,
                "IamRoleName": self.iam_role_name,
                "IamRoleArn": self.iam_role_arn,
            }
        return spec

    def prepare_try(self, context: Context) -> None:
        if self.stop_job_run_on_kill:
            self.log.warning(
                "stop_job_run_on_kill has no effect: a user's stop stops the run (cancel_on_user_stop), "
                "a worker shutdown keeps it running for the next try",
                cancel_on_user_stop=self.cancel_on_user_stop,
            )

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``StartJobRun`` with the token argument, without botocore retries; returns the run id.

        Replaces the stock ``submit_job`` (which scanned for an earlier run of the task first):
        the job is created or updated as in stock, the run's id is pushed (``glue_job_run_id``)
        and its link persisted before the id is returned.
        """
        arguments = self._run_arguments(context)
        if self.submission_token:
            arguments[TOKEN_ARGUMENT] = self.submission_token
        job_name = (
            self.hook.create_or_update_glue_job()
            if self.update_config
            else self.hook.get_or_create_glue_job()
        )
        self._job_run_id = None
        self.log.info(
            "Starting AWS Glue job run", job_name=job_name, wait_for_completion=self.wait_for_completion
        )
        response = no_retry_client(self.hook).start_job_run(
            JobName=job_name, Arguments=arguments, **(self.run_job_kwargs or {})
        )
        run_id = str(response["JobRunId"])
        self._set_job_run_id(context, run_id)
        return run_id

    def find_job(self, token: str, context: Context) -> str | None:
        """The id of the run of this job whose arguments carry ``token`` (newest first), or None."""
        paginator = self.hook.conn.get_paginator("get_job_runs")
        pages = paginator.paginate(JobName=self.job_name, PaginationConfig={"PageSize": _PAGE_SIZE})

        def carries_token(run: Mapping[str, Any]) -> bool:
            return (run.get("Arguments") or {}).get(TOKEN_ARGUMENT) == token

        try:
            run = find_in_pages(pages, "JobRuns", carries_token, max_items=_FIND_MAX_RUNS)
        except Exception as err:
            if error_code(err) == _NOT_FOUND:  # no such job: it never started a run
                return None
            raise
        return None if run is None else str(run["Id"])

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """
        The run's ``JobRunState``; while polling with ``verbose``, the new CloudWatch lines too.

        :raises JobNotFoundError: Glue no longer knows the run (the stock ``NOT_FOUND`` pseudo-state).
        """
        run_id = str(external_id)
        run = self._get_run(run_id)
        if self._log_tokens is not None:
            self._print_logs(run_id, self._log_tokens)
        return str(run["JobRunState"])

    def is_job_active(self, status: str) -> bool:
        """Anything but a terminal state: a state Glue may add later is waited on, not resubmitted."""
        return status not in TERMINAL_STATES

    def is_job_succeeded(self, status: str) -> bool:
        """Only SUCCEEDED (STOPPED is a failure, as in the stock operator)."""
        return status == SUCCEEDED

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """The engine's poll loop (logs printed with ``verbose``), then ``sleep_before_return`` on success."""
        self._log_tokens = GlueJobHook.LogContinuationTokens() if self.verbose else None
        try:
            super().poll_until_complete(external_id, context)
        finally:
            self._log_tokens = None
        final = self._final_status
        if self.sleep_before_return and final is not None and self.is_job_succeeded(final):
            self._sleep_between_polls(self.sleep_before_return)

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The run id, as the stock ``execute`` returns; pushes ``glue_job_run_id`` and the link first."""
        self.adopt_job(external_id, context)
        self.log.info("AWS Glue job run ended", job_name=self.job_name, job_run_id=str(external_id))
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``BatchStopJobRun``; a run that already ended is left as it is."""
        _stop_job_run(self.hook.conn, self.job_name, str(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``BatchStopJobRun`` through the same connection, for the custodian."""
        return "aws_glue_job_run", {
            "job_name": self.job_name,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The run's ``ErrorMessage``."""
        run = self.__dict__.get("_last_run") or {}
        if run.get("Id") != str(external_id):
            try:
                run = self._get_run(str(external_id))
            except Exception as err:  # the failure must surface, not a failure to describe it
                self.log.warning("Could not read the failed job run", job_run_id=external_id, error=repr(err))
                return ""
        return str(run.get("ErrorMessage") or "")

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A Glue job run id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    # ------------------------------------------------------------------ deferral
    def job_trigger(
        self, external_id: JsonValue, resumable: dict[str, Any]
    ) -> ResumableGlueJobCompleteTrigger:
        """The stock deferral's ``GlueJobCompleteTrigger`` arguments."""
        return ResumableGlueJobCompleteTrigger(
            job_name=self.job_name,
            run_id=str(external_id),
            verbose=self.verbose,
            aws_conn_id=self.aws_conn_id,
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            **resumable,
        )

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        run_id: JsonValue = event.get("run_id")
        return run_id

    # ------------------------------------------------------------------ helpers
    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """The stock ``_set_job_run_id``: the ``glue_job_run_id`` XCom and the run link, once per run."""
        self._set_job_run_id(context, str(external_id))

    def _run_arguments(self, context: Context) -> dict[str, str]:
        """``script_args`` with the stock OpenLineage injection (no ``--airflow_task_uuid``)."""
        arguments = dict(self.script_args or {})
        if self.openlineage_inject_parent_job_info:
            self.log.info("Injecting OpenLineage parent job information into Glue job arguments")
            arguments = inject_parent_job_information_into_glue_arguments(arguments, context)
        if self.openlineage_inject_transport_info:
            self.log.info("Injecting OpenLineage transport information into Glue job arguments")
            arguments = inject_transport_information_into_glue_arguments(arguments, context)
        return arguments

    def _get_run(self, run_id: str) -> dict[str, Any]:
        try:
            run: dict[str, Any] = self.hook.conn.get_job_run(JobName=self.job_name, RunId=run_id)["JobRun"]
        except Exception as err:
            if error_code(err) == _NOT_FOUND:
                raise JobNotFoundError(
                    f"AWS Glue job run {run_id!r} of job {self.job_name!r} does not exist (expired or "
                    f"deleted)."
                ) from err
            raise
        self._last_run = run
        return run

    def _print_logs(self, run_id: str, tokens: GlueJobHook.LogContinuationTokens) -> None:
        """The new CloudWatch lines of the run, as the stock ``verbose`` poll prints them."""
        try:
            self.hook.print_job_logs(job_name=self.job_name, run_id=run_id, continuation_tokens=tokens)
        except Exception as err:  # logs are a convenience: never fail the wait over them
            self.log.warning("Could not print the Glue job run's logs", job_run_id=run_id, error=repr(err))


class ResumableGlueJobCompleteTrigger(ResumableTriggerMixin, GlueJobCompleteTrigger):
    """
    The stock ``GlueJobCompleteTrigger``, plus an ``on_kill`` that stops the run after a user's stop.

    **Purpose:** the stock trigger has no ``on_kill``: a run whose deferred task a user marks
    failed keeps running. Here a user's stop stops it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``BatchStopJobRun``.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        run is stopped (None: no ledger).

    The other arguments are those of ``GlueJobCompleteTrigger``.

    .. versionadded:: 0.2.0
    """

    async def cancel_job(self) -> None:
        """``BatchStopJobRun``; a run that already ended is left as it is."""
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            response = await client.batch_stop_job_run(JobName=self.job_name, JobRunIds=[self.run_id])
        errors = [e for e in response.get("Errors") or [] if e.get("JobRunId") == self.run_id]
        if errors:
            self.log.info(
                "AWS Glue job run %s was not stopped: %s", self.run_id, errors[0].get("ErrorDetail")
            )
            return
        self.log.info("AWS Glue job run %s of job %s stopped.", self.run_id, self.job_name)


def _stop_job_run(client: Any, job_name: str, run_id: str) -> None:
    """
    ``BatchStopJobRun`` of one run; fine when the run already ended or is gone.

    :raises ResumableError: Glue refused to stop a run that is still active.
    """
    response = client.batch_stop_job_run(JobName=job_name, JobRunIds=[run_id])
    for error in response.get("Errors") or []:
        if str(error.get("JobRunId")) != run_id:
            continue
        try:
            state = str(client.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]["JobRunState"])
        except Exception as err:
            if error_code(err) == _NOT_FOUND:
                return  # nothing left to stop
            raise
        if state in TERMINAL_STATES:
            return
        detail = error.get("ErrorDetail") or {}
        raise ResumableError(
            f"{_SERVICE} did not stop job run {run_id} of job {job_name!r} ({state}): "
            f"{detail.get('ErrorCode')}: {detail.get('ErrorMessage')}. Stop it by hand."
        )


def cancel_glue_job_run_by_recipe(
    external_id: JsonValue, *, job_name: str, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """
    ``BatchStopJobRun`` of one run (canceller ``aws_glue_job_run`` of the custodian).

    :param external_id: the job run id.
    :param job_name: the Glue job the run belongs to.
    :param aws_conn_id: the Airflow connection of the operator.
    :param region_name: the operator's region.
    :raises RecipeRefusedError: no ``aws_conn_id``, or no such connection (no ambient credentials).

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.3.0 refuses a recipe without a connection; calls have a deadline.
    """
    client = cancel_client("glue", aws_conn_id, region_name, canceller="aws_glue_job_run")
    _stop_job_run(client, job_name, str(external_id))
