"""
What every resumable AWS operator shares: transient errors, a submit client without botocore
retries, argument checks, and the execute / poll plumbing around the mixin.

Private: the public classes live in :mod:`airflow_resumable.providers.amazon.batch` and
:mod:`airflow_resumable.providers.amazon.emr`. Nothing here decides about resuming; that stays in
:class:`~airflow_resumable.mixin.ResumableJobMixin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from airflow_resumable.exceptions import InvalidJobSpecError
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.record import fingerprint_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

__all__ = [
    "NO_RETRY_CONFIG",
    "AwsJobMixin",
    "error_code",
    "is_transient_aws_error",
    "no_retry_client",
    "require_mapping",
    "require_text",
]

T = TypeVar("T")

#: botocore's standard-mode throttling codes, plus its transient codes (``botocore.retries.standard``).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: One attempt per call: a lost response to a submission that has no idempotency token must not be
#: re-sent by botocore; the mixin retries instead, after asking ``find_job``. (``max_attempts`` in
#: botocore counts *retries*, so ``max_attempts=1`` would still re-send once.)
NO_RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})


def error_code(error: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient_aws_error(error: BaseException) -> bool:
    """Throttling, HTTP 429 and 5xx answers, and connection failures: worth another try."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(error) in THROTTLING_CODES or status == 429 or status >= 500
    return isinstance(error, (ConnectionError, HTTPClientError))


def no_retry_client(hook: Any) -> Any:
    """A client of the hook's service and connection with botocore's retries turned off."""
    base = deepcopy(hook.config) if hook.config is not None else Config()
    return hook.get_client_type(config=base.merge(NO_RETRY_CONFIG))


def require_text(value: Any, argument: str, service: str) -> str:
    """The value as a non-blank string, or :class:`InvalidJobSpecError` naming the argument."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidJobSpecError(
            f"{service}: argument {argument!r} must be a non-empty string, got {_kind(value)}; "
            f"nothing was submitted."
        )
    return value


def require_mapping(
    value: Any, argument: str, service: str, *, optional: bool = True
) -> Mapping[str, Any] | None:
    """The value if it is a dict (or None when ``optional``), else :class:`InvalidJobSpecError`."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping) or (not optional and not value):
        wanted = "a dict" if optional else "a non-empty dict"
        raise InvalidJobSpecError(
            f"{service}: argument {argument!r} must be {wanted}, got {_kind(value)}; nothing was submitted."
        )
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return f"a {type(value).__name__}"


class AwsJobMixin(ResumableJobMixin):
    """
    The AWS half of a resumable AWS operator: execute, errors, fingerprint, the not-waiting mode.

    Subclasses implement :meth:`_spec` (validated, rendered request, no AWS call) and
    :meth:`_adopt` (set the stock operator's attributes for a job and persist its links).
    """

    #: The stock operator's deferrable path waits for the job even with ``wait_for_completion=False``
    #: (Batch, EMR on EKS, EMR steps); the resumable one then waits in the worker instead.
    deferral_always_waits: ClassVar[bool] = True

    if TYPE_CHECKING:  # set by the stock operators
        task_id: str
        deferrable: bool
        wait_for_completion: bool

    def execute(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Validate the rendered arguments (no AWS call), then run the resumable engine.

        :param event: accepted for the stock signature (EMR Serverless); never set, since this
            operator does not defer.
        """
        self._fingerprint = fingerprint_of(self._spec())
        if getattr(self, "deferrable", False):
            self.log.warning(
                "deferrable=True is ignored: the resumable operator waits in the worker, which is "
                "what lets it checkpoint and reconnect",
                task_id=self.task_id,
            )
            if self.deferral_always_waits:
                self.wait_for_completion = True  # the stock deferrable path waits whatever it says
        self._prepare(context)
        return self.execute_resumable(context)

    def _spec(self) -> dict[str, Any]:
        """The validated request (before our token or marker), as fingerprinted. No AWS call."""
        raise NotImplementedError

    def _prepare(self, context: Context) -> None:
        """Per-try work of the stock ``execute`` that comes before any job (XComs, links)."""

    def _adopt(self, external_id: JsonValue, context: Context) -> None:
        """Make ``external_id`` this operator's job: stock attributes and extra links."""
        raise NotImplementedError

    def job_fingerprint(self, context: Context) -> str | None:
        """A hash of the validated request; the request itself is never stored or logged."""
        fingerprint: str | None = self.__dict__.get("_fingerprint")
        if fingerprint is None:
            fingerprint = self._fingerprint = fingerprint_of(self._spec())
        return fingerprint

    def _retrying(self, fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
        """Call ``fn`` with ``cloud_retry`` on transient errors (for calls outside the mixin's own)."""
        return self.cloud_retry.call(fn, *args, is_retryable=self.is_transient_error, what=what, **kwargs)

    def is_transient_error(self, error: BaseException) -> bool:
        """Throttling (``ThrottlingException`` and kin), 429, 5xx and connection errors."""
        return is_transient_aws_error(error) or super().is_transient_error(error)

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """
        Persist the stock links, then the mixin's signal-aware poll loop.

        With ``wait_for_completion=False`` the task ends once the job exists, as the stock operator
        does, and the job is never cancelled by this task.
        """
        self._adopt(external_id, context)
        if not getattr(self, "wait_for_completion", True):
            self.stop_waiting(
                self._retrying(self.get_job_status, external_id, context, what="get_job_status")
            )
            self.log.info("Not waiting for the job (wait_for_completion=False)", external_id=external_id)
            return
        super().poll_until_complete(external_id, context)
