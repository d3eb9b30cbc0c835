"""
The base of every job kind of :mod:`airflow_resumable.testing.aws`: :class:`JobKind` and the
:class:`TrackedJob` the controller keeps per job.

Private (public through :mod:`airflow_resumable.testing.aws`). A module per service subclasses
:class:`JobKind` (``_aws_jobs`` for Batch and EMR, ``_aws_jobs_<service>`` for the others), and
``_aws_jobs`` registers them all in ``KINDS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_resumable.testing._aws_wire import ErrorReply

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_realism import Listing
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["EPOCH", "JobKind", "TrackedJob"]

#: What moto renders for "not yet" timestamps.
EPOCH = datetime(1970, 1, 1)


@dataclass
class TrackedJob:
    """
    A job the controller created a lifecycle for.

    :param parent: the application, virtual cluster or EMR cluster the job belongs to.
    :param token: the idempotency token it was submitted with, if any.
    :param index: position on the kind's active path (the last one is the running state).
    :param pinned: set by ``set_state``: neither reads nor the clock move the job any more.
    """

    job_id: str
    kind: JobKind
    region: str
    account: str
    parent: str | None
    token: str | None
    seq: int
    action_on_failure: str | None = None
    index: int = 0
    reads: int = 0
    started_at: float | None = None
    pinned: bool = False
    finished: bool = False
    reason: str = ""
    created_at: float = field(default_factory=time.monotonic)
    #: When the job reached a terminal state (monotonic; the history retention counts from it).
    ended_at: float | None = None

    @property
    def state(self) -> str:
        """The state moto renders for the job now."""
        return self.kind.read_state(self)

    def summary(self) -> dict[str, Any]:
        """A JSON view for tests and the control API."""
        return {
            "job_id": self.job_id,
            "service": self.kind.service,
            "kind": self.kind.kind_name,
            "state": self.state,
            "parent": self.parent,
            "token": self.token,
            "region": self.region,
            "pinned": self.pinned,
            "finished": self.finished,
        }


class JobKind:
    """
    The jobs of one kind. Subclasses fill in the class attributes and the model access.

    ``name`` tells kinds apart (SageMaker has training and processing jobs); ``service`` is the
    botocore service whose calls the kind handles. A call belongs to the kind of its service whose
    :attr:`operations` include the call's operation (:func:`kind_for`).
    """

    #: Unique among the kinds; defaults to ``service`` (one kind per service).
    name: ClassVar[str] = ""
    service: ClassVar[str]
    #: The active states a new job walks through, one per status read; the last one is "running".
    path: ClassVar[tuple[str, ...]]
    succeeded: ClassVar[str]
    failed: ClassVar[str]
    #: The state a successful cancel request leaves an active job in.
    cancelled: ClassVar[str]
    states: ClassVar[frozenset[str]]
    terminal: ClassVar[frozenset[str]]
    submit_operation: ClassVar[str]
    read_operations: ClassVar[frozenset[str]]
    cancel_operations: ClassVar[frozenset[str]]
    default_failure_reason: ClassVar[str] = "the job failed"
    #: (status, code) answered for a reused idempotency token with another request; None: no tokens.
    token_conflict: ClassVar[tuple[int, str] | None] = None
    #: Jobs of one parent run one at a time, oldest first (EMR steps on a cluster).
    sequential: ClassVar[bool] = False
    #: Operations besides submit, reads and cancels that the kind answers or prechecks.
    extra_operations: ClassVar[frozenset[str]] = frozenset()
    #: (status, code) of the service's answer to a throttled call (realism).
    throttle_error: ClassVar[tuple[int, str]] = (400, "ThrottlingException")
    #: (status, code, message with ``{id}``) of a status read naming a job the service does not
    #: show; None: the kind's :meth:`conceal` leaves the job out of the answer instead.
    not_found_error: ClassVar[tuple[int, str, str] | None] = None
    #: (operation, status, code, message) of an answer to a status read that looks like not found
    #: (the not-found status or code) while the job exists: what the contract kit makes the
    #: service answer once to prove an operator tells the two apart. None: the service's not-found
    #: answer is unmistakable (an empty answer, or a code that means nothing else).
    not_found_lookalike: ClassVar[tuple[str, int, str, str] | None] = None
    #: The list operations, with how each pages (realism: page sizes, hidden young jobs).
    listings: ClassVar[dict[str, Listing]] = {}

    @property
    def kind_name(self) -> str:
        """``name``, or ``service`` when the kind sets no name."""
        return self.name or self.service

    @property
    def operations(self) -> frozenset[str]:
        """Every operation of :attr:`service` that belongs to this kind."""
        return frozenset(
            {
                self.submit_operation,
                *self.read_operations,
                *self.cancel_operations,
                *self.extra_operations,
                *self.listings,
            }
        )

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        """(job id, parent, action on failure) of each job a successful submit created. Required."""
        raise _missing(self, "created(call, reply)", "the ids of the jobs a successful submit created")

    def token(self, call: ApiCall) -> str | None:
        """The idempotency token of a submit call (None: the service has none)."""
        return None

    def token_scope(self, call: ApiCall) -> str:
        """What a token is unique within (the application or virtual cluster)."""
        return ""

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        """(parent, ids) a status read names; ids None means every job of the parent. Required."""
        raise _missing(self, "read_ids(call)", "the (parent, ids) a status read names")

    def cancel_ids(self, call: ApiCall) -> list[str]:
        """The ids a cancel call names. Required."""
        raise _missing(self, "cancel_ids(call)", "the ids a cancel call names")

    def cancel_applies(self, call: ApiCall, state: str) -> bool:
        """Whether a cancel call ends a job in ``state``."""
        return state not in self.terminal

    def cancel_reason(self, call: ApiCall) -> str:
        """The reason recorded on a job a cancel call ended."""
        return "Cancelled by request"

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        """Answer an operation moto lacks; None lets moto answer."""
        return None

    def conceal(self, call: ApiCall, body: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
        """
        The answer to a status read as the service gives it while the ``hidden`` jobs are not
        visible yet: by default its not-found error for a read naming one of them.

        :raises ErrorReply: the service answers an error for such a read.
        """
        _, ids = self.read_ids(call)
        named = [job_id for job_id in ids or [] if job_id in hidden]
        if named and self.not_found_error is not None:
            status, code, message = self.not_found_error
            raise ErrorReply(status, code, message.format(id=named[0]))
        return body

    def precheck(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> None:
        """Raise :class:`ErrorReply` where AWS answers an error and moto does not."""

    def locate(self, job_id: str, region: str, parent: str | None) -> str | None:
        """The moto account that holds the job, or None."""
        for account, regions in list(self.backends().items()):
            if region in regions and self.find_model(regions[region], job_id, parent) is not None:
                return str(account)
        return None

    def model(self, job: TrackedJob) -> Any:
        """The moto object of the job, or None once it is gone."""
        regions = self.backends().get(job.account, {})
        if job.region not in regions:
            return None
        return self.find_model(regions[job.region], job.job_id, job.parent)

    def read_state(self, job: TrackedJob) -> str:
        """
        The state moto's model of the job shows now (``EXPIRED`` once the model is gone).

        The default reads the model's ``state`` attribute; override it when moto keeps the state
        elsewhere (Batch ``status``, Athena ``status``).

        :raises TypeError: the model has no ``state`` attribute (instead of reading every job as
            in no state at all).
        """
        model = self.model(job)
        if model is None:
            return "EXPIRED"
        if not hasattr(model, "state"):
            raise TypeError(
                f"job kind {self.kind_name!r}: moto's {type(model).__name__} has no 'state' "
                "attribute; override JobKind.read_state(job) to read the job's state"
            )
        return str(model.state)

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        """Set what moto's responses read for the job's state (and its reason). Required."""
        raise _missing(self, "write_state(job, state, reason)", "set the state on moto's model")

    def remove(self, job: TrackedJob) -> None:
        """Delete the job from moto's backend, as an expired history does. Required."""
        raise _missing(self, "remove(job)", "delete the job from moto's backend")

    def backends(self) -> Any:
        """moto's ``BackendDict`` of the service (``moto.glue.models.glue_backends``). Required."""
        raise _missing(self, "backends()", "return moto's BackendDict of the service")

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        """moto's object of the job in one region's ``backend``, or None. Required."""
        raise _missing(self, "find_model(backend, job_id, parent)", "return moto's object of the job")


def _missing(kind: JobKind, hook: str, what: str) -> NotImplementedError:
    """The error for a hook a job kind must write and did not."""
    return NotImplementedError(
        f"job kind {type(kind).__name__} must implement {hook}: {what} "
        "(docs/maintainers.md, 'A fake that keeps jobs running')"
    )
