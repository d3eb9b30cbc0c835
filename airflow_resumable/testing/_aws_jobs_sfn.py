"""
Step Functions executions for :mod:`airflow_resumable.testing.aws`: see :mod:`._aws_jobs`.

Private. moto (without its ``execute_state_machine`` parser) starts every execution ``RUNNING``
and leaves it so for ever, honours the name of ``StartExecution`` as AWS does for STANDARD
workflows (same name and input while running: the same execution; otherwise
``ExecutionAlreadyExists``) and has no ``RedriveExecution``. The kind drives the lifecycle, maps
the name onto the controller's idempotency tokens (so a replay creates nothing and shows as such
in the ledger) and answers ``RedriveExecution`` with its ``clientToken``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing._aws_clients import TEST_ROLE_ARN, aws_client
from airflow_resumable.testing._aws_kind import JobKind
from airflow_resumable.testing._aws_wire import ErrorReply

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_kind import TrackedJob
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["SFN_KINDS", "StepFunctionsExecutions", "provision_state_machine"]

#: A Pass state: the execution's output is its input.
PASS_DEFINITION = '{"StartAt": "Pass", "States": {"Pass": {"Type": "Pass", "End": true}}}'
#: AWS remembers a redrive's ``clientToken`` for 15 minutes.
REDRIVE_TOKEN_SECONDS = 15 * 60
_REDRIVABLE = frozenset(("FAILED", "TIMED_OUT", "ABORTED"))
#: (error, default cause) AWS reports for an execution that ended this way.
_ERRORS = {
    "FAILED": ("States.TaskFailed", "An error occurred in a task state"),
    "TIMED_OUT": ("States.Timeout", "The execution exceeded its TimeoutSeconds"),
}


class StepFunctionsExecutions(JobKind):
    """
    Executions of Step Functions state machines (job id: the execution ARN).

    ``StartExecution``'s ``name`` is the idempotency token, per state machine, while an execution
    of that name runs: the controller replays the first answer (``ExecutionAlreadyExists`` for
    another input). Once the execution ended, the name is no token any more: moto answers
    ``ExecutionAlreadyExists``, as AWS does. EXPRESS workflows are modelled as STANDARD ones.
    """

    name = "states"
    service = "stepfunctions"
    path = ("RUNNING",)
    succeeded, failed, cancelled = "SUCCEEDED", "FAILED", "ABORTED"
    states = frozenset(("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"))
    terminal = frozenset(("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"))
    submit_operation = "StartExecution"
    read_operations = frozenset(("DescribeExecution",))
    cancel_operations = frozenset(("StopExecution",))
    extra_operations = frozenset(("RedriveExecution",))
    not_found_error = (400, "ExecutionDoesNotExist", "Execution Does Not Exist: '{id}'")
    default_failure_reason = _ERRORS["FAILED"][1]
    token_conflict = (400, "ExecutionAlreadyExists")

    def __init__(self) -> None:
        #: (execution ARN, client token) -> (monotonic time, answer) of each redrive that took effect.
        self._redrives: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(reply["executionArn"]), str(call.body.get("stateMachineArn")), None)]

    def token(self, call: ApiCall) -> str | None:
        """The execution name, unless an execution of that name has ended (AWS then refuses it)."""
        name = call.body.get("name")
        if not name:
            return None
        execution = self._named(call.region, str(call.body.get("stateMachineArn", "")), str(name))
        if execution is not None and execution.status in self.terminal:
            return None
        return str(name)

    def token_scope(self, call: ApiCall) -> str:
        return str(call.body.get("stateMachineArn", ""))

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [str(call.body.get("executionArn", ""))]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(call.body.get("executionArn", ""))]

    def cancel_reason(self, call: ApiCall) -> str:
        return str(call.body.get("cause") or "")

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        """``RedriveExecution``: a failed, timed-out or aborted execution runs again."""
        if call.operation != "RedriveExecution":
            return None
        arn = str(call.body.get("executionArn", ""))
        now = time.monotonic()
        self._redrives = {
            key: seen
            for key, seen in self._redrives.items()
            if key[0] in jobs and now - seen[0] < REDRIVE_TOKEN_SECONDS
        }
        job = jobs.get(arn)
        if job is None or job.kind is not self or self.model(job) is None:
            raise ErrorReply(400, "ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
        token = call.body.get("clientToken")
        seen = self._redrives.get((arn, str(token))) if token else None
        if seen is not None:
            return seen[1]
        if job.state not in _REDRIVABLE:
            raise ErrorReply(
                400, "ExecutionNotRedrivable", f"Execution '{arn}' is {job.state} and cannot be redriven"
            )
        job.pinned, job.finished, job.reason, job.started_at = False, False, "", None
        self.write_state(job, "RUNNING", "")
        reply: dict[str, Any] = {"redriveDate": time.time()}
        if token:
            self._redrives[(arn, str(token))] = (now, reply)
        return reply

    def backends(self) -> Any:
        from moto.stepfunctions.models import stepfunctions_backends

        return stepfunctions_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        for instance in _instances(backend):
            for execution in instance.executions:
                if execution.execution_arn == job_id:
                    return execution
        return None

    def _named(self, region: str, state_machine_arn: str, name: str) -> Any:
        """The moto execution of that name of the state machine (any version), or None."""
        machine = ":".join(state_machine_arn.split(":")[:7])
        for regions in list(self.backends().values()):
            if region not in regions:
                continue
            for instance in _instances(regions[region]):
                if instance.arn.startswith(machine):
                    for execution in instance.executions:
                        if execution.name == name:
                            return execution
        return None

    def read_state(self, job: TrackedJob) -> str:
        model = self.model(job)
        return "EXPIRED" if model is None else str(model.status)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        execution = self.model(job)
        execution.status = state
        ended = state in self.terminal
        execution.stop_date = utcnow() if ended else None
        succeeded = state == self.succeeded
        execution.output = execution.execution_input if succeeded else None
        execution.output_details = {"included": True} if succeeded else None
        error, default_cause = _ERRORS.get(state, (None, None))
        execution.error = error
        execution.cause = (reason or default_cause) if ended and not succeeded else None
        if state == "RUNNING" and job.started_at is None:  # a one-state path: running from the start
            job.started_at = time.monotonic()

    def remove(self, job: TrackedJob) -> None:
        for instance in _instances(self.backends()[job.account][job.region]):
            instance.executions[:] = [e for e in instance.executions if e.execution_arn != job.job_id]


def _instances(backend: Any) -> list[Any]:
    """Every state machine of a moto backend and every published version (each holds executions)."""
    return [
        instance for machine in backend.state_machines for instance in (machine, *machine.versions.values())
    ]


def provision_state_machine(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable", workflow_type: str = "STANDARD"
) -> str:
    """
    Create a one-state (Pass) state machine; return its ARN.

    :param url: the controller's base url.
    :param region: the region.
    :param name: the state machine's name (letters, digits, hyphens, underscores).
    :param workflow_type: ``STANDARD`` or ``EXPRESS``.

    .. versionadded:: 0.2.0
    """

    client = aws_client(url, "stepfunctions", region)
    response = client.create_state_machine(
        name=name, definition=PASS_DEFINITION, roleArn=TEST_ROLE_ARN, type=workflow_type
    )
    return str(response["stateMachineArn"])


SFN_KINDS: tuple[JobKind, ...] = (StepFunctionsExecutions(),)
