"""
``ResumableStepFunctionStartExecutionOperator``: a Step Functions execution started once per
intended submission, waited for across worker shutdowns, crashes and retries.

``StartExecution`` is idempotent on the execution's ``name`` for STANDARD workflows, so the name
carries a key of the submission token: a resubmission of the same intent gets the same execution
back (or ``ExecutionAlreadyExists`` once it ended, which names it just as well).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.links.step_function import (
    StateMachineDetailsLink,
    StateMachineExecutionsDetailsLink,
)
from airflow.providers.amazon.aws.operators.step_function import StepFunctionStartExecutionOperator
from airflow.providers.amazon.aws.triggers.step_function import StepFunctionsExecutionCompleteTrigger
from botocore.exceptions import ClientError

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon._cancel import cancel_client
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    error_code,
    name_with_token,
    require_text,
    status_read_bound,
)
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "ResumableStepFunctionStartExecutionOperator",
    "ResumableStepFunctionsExecutionCompleteTrigger",
    "cancel_execution_by_recipe",
    "execution_arn_for",
]

TERMINAL_STATES = frozenset(("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"))
SUCCEEDED = "SUCCEEDED"
#: Longest execution name Step Functions accepts.
MAX_NAME = 80
#: ``error`` and ``cause`` of ``StopExecution`` for an execution stopped on behalf of its task.
STOP_ERROR = "airflow_resumable.Stopped"
STOP_CAUSE = (
    "Stopped by Airflow (airflow_resumable) on behalf of its task: a user's stop, a timeout, a "
    "failure for good or a changed spec"
)
_SERVICE = "Step Functions"
_MACHINE_ARN = re.compile(r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[^:\s]+(:[^:\s]+)?")
_EXECUTION_ARN = re.compile(r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:execution:[^:\s]+:[^:\s]+")
#: Whitespace, brackets, wildcards, `` " # % \ ^ | ~ ` $ & , ; : / `` and control characters.
_NOT_IN_NAME = re.compile(r'[\s<>{}\[\]?*"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]')
_NOT_FOUND = frozenset(("ExecutionDoesNotExist",))
_TRANSIENT_CODES = frozenset(("KmsThrottlingException",))
_FAILURE_DETAIL_CHARS = 2000
#: The stock ``step_function_succeeded`` waiter knows no ``TIMED_OUT``: it waits out its attempts.
_ENDED_ACCEPTORS = [
    {"matcher": "path", "argument": "status", "expected": "SUCCEEDED", "state": "success"},
    *(
        {"matcher": "path", "argument": "status", "expected": state, "state": "failure"}
        for state in ("FAILED", "TIMED_OUT", "ABORTED")
    ),
]


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """
    The ARN of the execution ``name`` of a state machine (given by its ARN, a version's or an alias's).

    ``arn:<partition>:states:<region>:<account>:execution:<state machine>:<name>``: executions of
    versions and aliases are named after the state machine itself.
    """
    parts = state_machine_arn.split(":")
    return ":".join([*parts[:5], "execution", parts[6], name])


def cancel_execution_by_recipe(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """
    ``StopExecution`` (canceller ``aws_sfn_execution``), as the operator's own ``cancel_job``.

    :raises RecipeRefusedError: no ``aws_conn_id``, or no such connection (no ambient credentials).

    .. versionchanged:: 0.3.0 refuses a recipe without a connection; calls have a deadline.
    """
    client = cancel_client("stepfunctions", aws_conn_id, region_name, canceller="aws_sfn_execution")
    client.stop_execution(executionArn=str(external_id), error=STOP_ERROR, cause=STOP_CAUSE)


class ResumableStepFunctionsExecutionCompleteTrigger(
    ResumableTriggerMixin, StepFunctionsExecutionCompleteTrigger
):
    """
    The stock ``StepFunctionsExecutionCompleteTrigger``, plus an ``on_kill`` that stops the execution.

    **Purpose:** the stock trigger has no ``on_kill``: an execution whose deferred task a user
    marks failed keeps running. Here a user's stop stops it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``StopExecution``. The waiter also fails on ``TIMED_OUT``, which the
    stock waiter does not know (it would wait out all its attempts).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).

    The other arguments are those of ``StepFunctionsExecutionCompleteTrigger``.

    .. versionadded:: 0.2.0
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execution_arn: str = str(self.serialized_fields["execution_arn"])
        self.waiter_config_overrides = {"acceptors": _ENDED_ACCEPTORS}

    async def cancel_job(self) -> None:
        """``StopExecution``."""
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            await client.stop_execution(executionArn=self.execution_arn, error=STOP_ERROR, cause=STOP_CAUSE)
        self.log.info("Step Functions execution %s stopped.", self.execution_arn)


class ResumableStepFunctionStartExecutionOperator(AwsJobMixin, StepFunctionStartExecutionOperator):
    """
    Start a Step Functions execution exactly once per intended submission and wait for it across
    worker shutdowns, crashes and retries.

    **Purpose:** a drop-in for
    :class:`~airflow.providers.amazon.aws.operators.step_function.StepFunctionStartExecutionOperator`
    (same arguments, the execution ARN as return value, the same extra links) whose execution is
    waited for and survives the worker that waits: a retry or a reschedule reconnects to it
    instead of starting another, and a user's stop stops it. Unlike stock, it waits for the
    execution to end by default (``wait_for_completion=True``); ``wait_for_completion=False``
    returns the ARN once the execution exists, as the stock operator does.

    **How it works:** ``StartExecution`` deduplicates on the execution name for STANDARD workflows
    (``submission_is_idempotent``): the name is ``<name>-<token key>`` (:func:`name_with_token`,
    80 characters at most; without a ``name``, ``<dag_id>-<task_id>`` stands for it), the same for
    every resubmission of one intent and new for the next one. A resubmission gets the running
    execution back, or ``ExecutionAlreadyExists`` once it ended: its ARN is then derived from the
    name and adopted (after checking that its input is ours). botocore's retries stay on: a
    re-sent request lands on the same name. With ``is_redrive_execution`` the submission is
    ``RedriveExecution`` of the execution ``name`` with ``clientToken`` = the submission token (AWS
    remembers it for 15 minutes; later, an execution found running or succeeded is adopted).
    ``RUNNING`` and ``PENDING_REDRIVE`` (and any state AWS adds later) are active;
    ``SUCCEEDED`` succeeded; ``FAILED``, ``TIMED_OUT`` and ``ABORTED`` failed, with the
    execution's ``error`` and ``cause``. Cancel is ``StopExecution``.

    **Deferrable:** with ``deferrable=True`` the execution ARN is recorded, then the task defers to
    :class:`ResumableStepFunctionsExecutionCompleteTrigger` (the stock trigger, stock
    ``waiter_delay``, ``waiter_max_attempts`` and timeout ``waiter_max_attempts * waiter_delay``),
    which frees the worker slot while the execution runs; as in stock it waits whatever
    ``wait_for_completion`` says. Its ``on_kill`` stops the execution after a user's stop, never
    after a clear. ``execute_complete`` re-enters the engine: the execution ARN, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try and the next one reconnects.

    **Limitations:** EXPRESS state machines are refused (``InvalidJobSpecError``, after one
    ``DescribeStateMachine``): their executions are neither idempotent by name nor readable with
    ``DescribeExecution`` or ``ListExecutions``, so they can be neither found again nor waited
    for. The execution's name is not ``name`` but ``name`` cut to 67 characters plus
    ``-<12 hex>``: a fixed name would make every later intent fail with ``ExecutionAlreadyExists``
    (names are unique per state machine for 90 days). ``waiter_max_attempts`` bounds the status
    reads of a try's wait, as it bounds the stock deferral. ``state_machine_input``
    must be a dict or a JSON string (stock drops any other type silently).

    :param wait_for_completion: wait for the execution to end (True, the resumable default), or
        return its ARN once it exists (False, what the stock operator does).
    :param waiter_delay: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``StepFunctionStartExecutionOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.2.0
    """

    #: Key of the bare execution ARN in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "sfn_execution_arn"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "step_functions"

    def __init__(self, *, wait_for_completion: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_for_completion = wait_for_completion

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``waiter_delay``."""
        return float(self.waiter_delay)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.waiter_delay = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``waiter_max_attempts`` bounds the wait, as in the stock deferral's waiter."""
        return status_read_bound(self.waiter_max_attempts, "waiter_max_attempts")

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        machine = require_text(self.state_machine_arn, "state_machine_arn", _SERVICE)
        if not _MACHINE_ARN.fullmatch(machine):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'state_machine_arn' must be a state machine ARN "
                f"(arn:aws:states:<region>:<account>:stateMachine:<name>[:<version or alias>]), "
                f"got {machine!r}; nothing was submitted."
            )
        if self.name is not None:
            name = require_text(self.name, "name", _SERVICE)
            if len(name) > MAX_NAME or _NOT_IN_NAME.search(name):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'name' must be at most {MAX_NAME} characters without "
                    f"whitespace, brackets, wildcards, control characters or any of "
                    f'" # % \\ ^ | ~ ` $ & , ; : /; got {name!r}. Nothing was submitted.'
                )
        redrive = self._redrive_flag()
        if redrive and self.name is None:
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'name' (the execution to redrive) is required with "
                f"is_redrive_execution=True; nothing was submitted."
            )
        return {"stateMachineArn": machine, "name": self.name, "input": self._input(), "redrive": redrive}

    def _redrive_flag(self) -> bool:
        value = self.is_redrive_execution
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"  # a rendered template
        if not isinstance(value, bool):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'is_redrive_execution' must be a bool, got a "
                f"{type(value).__name__}; nothing was submitted."
            )
        return value

    def _input(self) -> str | None:
        """The ``input`` of ``StartExecution``, as the stock hook builds it (a dict as JSON)."""
        value = self.state_machine_input
        if value is None:
            return None
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'state_machine_input' is a string but not JSON; "
                    f"nothing was submitted."
                ) from None
            return value
        if isinstance(value, dict):
            try:
                return json.dumps(value)
            except (TypeError, ValueError) as err:
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'state_machine_input' cannot be written as JSON ({err}); "
                    f"nothing was submitted."
                ) from None
        raise InvalidJobSpecError(
            f"{_SERVICE}: argument 'state_machine_input' must be a dict or a JSON string, got a "
            f"{type(value).__name__}; nothing was submitted."
        )

    def prepare_try(self, context: Context) -> None:
        """Refuse an EXPRESS state machine, then persist the state machine link, as stock does first."""
        self._refuse_express()
        StateMachineDetailsLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            state_machine_arn=self.state_machine_arn,
        )

    def _refuse_express(self) -> None:
        machine = ":".join(self.state_machine_arn.split(":")[:7])  # no version or alias
        try:
            described = self._retrying(
                self.hook.conn.describe_state_machine, stateMachineArn=machine, what="describe_state_machine"
            )
        except ClientError as err:
            if self.is_transient_error(err):
                raise
            # Stock needs no DescribeStateMachine permission: StartExecution reports a real problem.
            self.log.warning(
                "Could not read the state machine's type; assuming STANDARD",
                state_machine_arn=machine,
                error=error_code(err) or repr(err),
            )
            return
        if described.get("type") == "EXPRESS":
            raise InvalidJobSpecError(
                f"{_SERVICE}: state machine {machine} is an EXPRESS workflow: its executions are not "
                f"idempotent by name and cannot be read back with DescribeExecution, so they can be "
                f"neither found again nor waited for. Use the stock StepFunctionStartExecutionOperator "
                f"or a STANDARD state machine. Nothing was submitted."
            )

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``StartExecution`` named after the submission token (or ``RedriveExecution`` with it as
        ``clientToken``); returns the execution ARN.
        """
        if self._redrive_flag():
            return self._redrive(context)
        token = self.submission_token
        name = self.name if token is None else name_with_token(self._name_base(), token, max_length=MAX_NAME)
        execution_input = self._input()
        args: dict[str, Any] = {"stateMachineArn": self.state_machine_arn}
        if name is not None:
            args["name"] = name
        if execution_input is not None:
            args["input"] = execution_input
        self.log.info(
            "Starting Step Functions execution", state_machine_arn=self.state_machine_arn, execution_name=name
        )
        try:
            return str(self.hook.conn.start_execution(**args)["executionArn"])
        except ClientError as err:
            if error_code(err) != "ExecutionAlreadyExists" or name is None or token is None:
                raise
            return self._existing_execution(name, execution_input)

    def _name_base(self) -> str:
        """The user's ``name``, else ``<dag_id>-<task_id>`` in the characters every name may hold."""
        if self.name:
            return str(self.name)
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.dag_id}-{self.task_id}").strip("-") or "airflow"

    def _existing_execution(self, name: str, execution_input: str | None) -> str:
        """The ARN of this intent's execution, which ``StartExecution`` refused as existing (it ended)."""
        arn = execution_arn_for(self.state_machine_arn, name)
        execution = self._describe(arn)
        if not _same_json(execution.get("input"), execution_input or "{}"):
            raise ResumableError(
                f"{_SERVICE}: execution {arn} of this submission exists with another input; it is not "
                f"adopted. Clear the task to start a new generation."
            )
        self.log.info(
            "The execution of this submission exists already; adopting it",
            execution_arn=arn,
            status=execution.get("status"),
        )
        return arn

    def _redrive(self, context: Context) -> str:
        """``RedriveExecution`` of the execution ``name``, ``clientToken`` = the submission token."""
        arn = execution_arn_for(self.state_machine_arn, str(self.name))
        args: dict[str, Any] = {"executionArn": arn}
        if self.submission_token:
            args["clientToken"] = self.submission_token
        self.log.info("Redriving Step Functions execution", execution_arn=arn)
        try:
            self.hook.conn.redrive_execution(**args)
        except ClientError as err:
            if error_code(err) != "ExecutionNotRedrivable":
                raise
            status = self.get_job_status(arn, context)
            if not self.is_job_active(status) and not self.is_job_succeeded(status):
                raise
            self.log.info(
                "The execution runs or succeeded already; adopting it", execution_arn=arn, status=status
            )
        return arn

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The execution's ``status``."""
        return str(self._describe(str(external_id))["status"])

    def is_job_active(self, status: str) -> bool:
        """Anything but SUCCEEDED, FAILED, TIMED_OUT and ABORTED (so PENDING_REDRIVE too)."""
        return status not in TERMINAL_STATES

    def is_job_succeeded(self, status: str) -> bool:
        """Only SUCCEEDED."""
        return status == SUCCEEDED

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The execution ARN, as the stock ``execute`` returns; persists the stock links first."""
        self.adopt_job(external_id, context)
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``StopExecution``."""
        self.hook.conn.stop_execution(executionArn=str(external_id), error=STOP_ERROR, cause=STOP_CAUSE)

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``StopExecution`` through the same connection, for the custodian."""
        return "aws_sfn_execution", {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name}

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The execution's ``error`` and ``cause``."""
        execution = self.__dict__.get("_last_execution") or {}
        if execution.get("executionArn") != external_id:
            try:
                execution = self._describe(str(external_id))
            except Exception as err:  # the failure must surface, not a failure to describe it
                self.log.warning(
                    "Could not describe the failed execution", execution_arn=external_id, error=repr(err)
                )
                return ""
        detail = ": ".join(str(part) for part in (execution.get("error"), execution.get("cause")) if part)
        return detail[:_FAILURE_DETAIL_CHARS]

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """An execution ARN."""
        return isinstance(value, str) and _EXECUTION_ARN.fullmatch(value) is not None

    def is_transient_error(self, error: BaseException) -> bool:
        """As for every AWS operator, plus ``KmsThrottlingException``."""
        return error_code(error) in _TRANSIENT_CODES or super().is_transient_error(error)

    # ------------------------------------------------------------------ deferral
    def job_trigger(
        self, external_id: JsonValue, resumable: dict[str, Any]
    ) -> ResumableStepFunctionsExecutionCompleteTrigger:
        """The stock deferral's trigger arguments."""
        return ResumableStepFunctionsExecutionCompleteTrigger(
            execution_arn=str(external_id),
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            botocore_config=self.botocore_config,
            verify=self.verify,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``waiter_max_attempts * waiter_delay``, as the stock deferral."""
        return timedelta(seconds=self.waiter_max_attempts * self.waiter_delay)

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        arn: JsonValue = event.get("execution_arn")
        return arn

    # ------------------------------------------------------------------ helpers
    def _describe(self, arn: str) -> dict[str, Any]:
        try:
            execution = dict(self.hook.conn.describe_execution(executionArn=arn))
        except ClientError as err:
            if error_code(err) in _NOT_FOUND:
                raise JobNotFoundError(
                    f"{_SERVICE} execution {arn!r} does not exist (expired, deleted or another account)."
                ) from err
            raise
        self._last_execution = execution
        return execution

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """The execution link (once per execution and try)."""
        arn = str(external_id)
        if self.__dict__.get("_links_for") == arn:
            return
        StateMachineExecutionsDetailsLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            execution_arn=arn,
        )
        self._links_for = arn


def _same_json(stored: Any, ours: str) -> bool:
    """Whether an execution's input (None when AWS left it out) is ``ours``, as JSON."""
    if stored is None:
        return True
    try:
        return bool(json.loads(stored) == json.loads(ours))
    except (TypeError, ValueError):
        return bool(stored == ours)
