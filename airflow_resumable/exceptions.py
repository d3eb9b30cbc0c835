"""Exceptions raised by airflow_resumable; every one is an ``AirflowException``."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException

__all__ = [
    "CorruptRecordError",
    "HandedOverError",
    "InvalidJobSpecError",
    "JobFailedError",
    "JobNotFoundError",
    "RecipeRefusedError",
    "ResumableError",
    "ResumeLimitError",
    "StateStoreUnavailableError",
    "StoppedByUserError",
    "ThrottledError",
    "TransientCloudError",
]


class ResumableError(AirflowException):
    """Base class of every error this package raises."""


class InvalidJobSpecError(ResumableError, AirflowFailException):
    """The job specification cannot be valid; raised before any cloud call, never retried."""


class JobFailedError(ResumableError):
    """The remote job reached a terminal state other than success."""

    def __init__(self, service: str, external_id: object, status: str, detail: str = "") -> None:
        self.service = service
        self.external_id = external_id
        self.status = status
        message = f"{service} job {external_id!r} ended in state {status!r}"
        if detail:
            message += f": {detail}"
        message += ". The next try submits a fresh job (a new generation)."
        super().__init__(message)


class JobNotFoundError(ResumableError):
    """The cloud does not know the external id (expired history, wrong account, deleted)."""


class TransientCloudError(ResumableError):
    """A cloud call failed in a way worth retrying (throttling, 5xx, lost connection)."""


class ThrottledError(TransientCloudError):
    """
    The service refused a call for its rate (HTTP 429, ``ThrottlingException``): nothing was done.

    The mixin's default ``is_throttling_error`` recognises it; a provider that wraps its
    service's throttling answers in it gets the throttling patience without overriding the hook.

    .. versionadded:: 0.4.0
    """


class CorruptRecordError(ResumableError, AirflowFailException):
    """The task state store holds a value this package cannot trust; the task stops instead of guessing."""


class StateStoreUnavailableError(ResumableError):
    """Writing to the task state store kept failing; nothing was submitted."""


class StoppedByUserError(ResumableError, AirflowFailException):
    """The task instance was stopped from outside (marked failed or success, its run failed or deleted)."""


class HandedOverError(ResumableError):
    """
    The task instance was cleared while this try ran: the job is left to the next try.

    Ends the try without touching the remote job; the server already decided what comes next.

    .. versionadded:: 0.2.0
    """


class RecipeRefusedError(ResumableError):
    """
    A cancel recipe the custodian will not run: it names no connection, or its arguments are out of
    bounds; never retried.

    .. versionadded:: 0.3.0
    """


class ResumeLimitError(ResumableError, AirflowFailException):
    """A worker shutdown arrived after ``max_resumes`` consecutive checkpoints; the task fails for good."""
