"""
What every resumable AWS operator shares, public for provider maintainers who write their own:

- :func:`is_transient_aws_error`: throttling, 429, 5xx and connection failures (what botocore's
  standard retry mode retries), for ``is_transient_error`` when botocore's retries are off;
- :func:`no_retry_client`: a client of the hook's service with botocore's retries off, for the
  submit call, so a lost response is never re-sent blindly;
- :func:`token_key` and :func:`name_with_token`: a short key derived from the submission token,
  and a job name that carries it (for services whose job names are unique: SageMaker, Step
  Functions), within the service's length limit;
- :func:`find_in_pages`: the first item of a paginated listing that matches, with a bound;
- :func:`require_text`, :func:`require_mapping`: argument checks that fail before any AWS call;
- :class:`AwsJobMixin`: execute, fingerprint, the not-waiting mode and ``deferrable=True``
  (defer to the stock trigger, resume through the engine) around
  :class:`~airflow_resumable.mixin.ResumableJobMixin`.

Nothing here decides about resuming; that stays in the mixin.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, cast

from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, ResumableError
from airflow_resumable.ledger import ledger_key
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity, fingerprint_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from airflow.sdk.definitions.context import Context
    from airflow.triggers.base import BaseTrigger
    from pydantic import JsonValue

__all__ = [
    "NO_RETRY_CONFIG",
    "AwsJobMixin",
    "custodian_client",
    "error_code",
    "find_in_pages",
    "is_throttling_aws_error",
    "is_transient_aws_error",
    "name_with_token",
    "no_retry_client",
    "require_mapping",
    "require_text",
    "says_not_found",
    "status_read_bound",
    "token_key",
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
#: The throttling codes among them: the service refused the call (timeouts may have been carried out).
REFUSED_CODES = THROTTLING_CODES - {"RequestTimeout", "RequestTimeoutException"}
#: One attempt per call: a lost response to a submission that has no idempotency token must not be
#: re-sent by botocore; the mixin retries instead, after asking ``find_job``. (``max_attempts`` in
#: botocore counts *retries*, so ``max_attempts=1`` would still re-send once.)
NO_RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})


def custodian_client(service: str, aws_conn_id: object, region_name: object, *, canceller: str) -> Any:
    """
    The boto3 client a custodian canceller uses: the recipe's Airflow connection (never this
    component's ambient credentials), each call bounded by ``[resumable]
    custodian_call_timeout_seconds``.

    :param service: the boto3 service name (``athena``, ``glue``, ...).
    :param aws_conn_id: the recipe's connection id, as the recipe holds it (checked here).
    :param region_name: the recipe's region (None: the connection's).
    :param canceller: the canceller's registered name, for messages.
    :raises RecipeRefusedError: no connection id, no such connection, or a region that is no string.

    .. versionadded:: 0.5.0
    """
    from airflow_resumable.providers.amazon._cancel import cancel_client

    return cancel_client(service, aws_conn_id, region_name, canceller=canceller)


def error_code(error: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


#: Words of an AWS error message that say the named resource is unknown (lower case).
_NOT_FOUND_WORDS = ("not found", "not exist", "could not find", "cannot find", "no such")


def says_not_found(error: BaseException, codes: Iterable[str], *, by_code: Iterable[str] = ()) -> bool:
    """
    Whether ``error`` says the job is unknown to the service: a ``ClientError`` whose code is in
    ``by_code`` (a code that means nothing else, e.g. ``ResourceNotFoundException``), or in
    ``codes`` (a code the service also answers for other causes, e.g. Athena's
    ``InvalidRequestException`` or SageMaker's ``ValidationException``) with a message that says
    so ("not found", "does not exist", "could not find", ...).

    A job taken for unknown is replaced by a new one, so an error that merely shares the code is
    not enough (the contract kit's ``test_an_error_like_not_found_is_not_taken_for_it``).

    .. versionadded:: 0.5.0
    """
    code = error_code(error)
    if code in set(by_code):
        return True
    if code not in set(codes) or not isinstance(error, ClientError):
        return False
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return any(words in message for words in _NOT_FOUND_WORDS)


def is_transient_aws_error(error: BaseException) -> bool:
    """Throttling, HTTP 429 and 5xx answers, and connection failures: worth another try."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(error) in THROTTLING_CODES or status == 429 or status >= 500
    return isinstance(error, (ConnectionError, HTTPClientError))


def is_throttling_aws_error(error: BaseException) -> bool:
    """
    A call the service refused for its rate: a throttling code (botocore's standard retry mode's
    list) or HTTP 429. Such a call was not carried out.

    .. versionadded:: 0.4.0
    """
    if not isinstance(error, ClientError):
        return False
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status == 429 or error_code(error) in REFUSED_CODES


def no_retry_client(hook: Any) -> Any:
    """A client of the hook's service and connection with botocore's retries turned off."""
    base = deepcopy(hook.config) if hook.config is not None else Config()
    return hook.get_client_type(config=base.merge(NO_RETRY_CONFIG))


def token_key(token: str, length: int = 12) -> str:
    """
    ``length`` hex characters of a submission token (``ar-<40 hex>``): short enough for a name or
    a tag, long enough that two intents never share it in practice.
    """
    return token.removeprefix("ar-")[:length]


def name_with_token(base: str, token: str, *, max_length: int, key_length: int = 12) -> str:
    """
    ``<base>-<token key>``, with ``base`` cut so the whole fits ``max_length`` characters.

    For services whose job names are unique per account (SageMaker) or per state machine (Step
    Functions): the name itself deduplicates a resubmission of the same intent, and a new intent
    (a new token) gets a new name. Deterministic: the same base and token always give the same name.

    :raises InvalidJobSpecError: when ``max_length`` leaves no room for the key.
    """
    suffix = f"-{token_key(token, key_length)}"
    room = max_length - len(suffix)
    if room < 1:
        raise InvalidJobSpecError(f"a name of at most {max_length} characters cannot carry a token key")
    return base[:room].rstrip("-") + suffix


def status_read_bound(value: Any, argument: str) -> tuple[int, str] | None:
    """
    ``(value, argument)`` for :meth:`~airflow_resumable.mixin.ResumableJobMixin.max_status_reads`
    when ``value`` is a positive number of attempts (a stock ``waiter_max_attempts``,
    ``max_polling_attempts``, ``max_retries``), else None (no bound).

    .. versionadded:: 0.5.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        reads = int(value)
    except ValueError:
        return None
    return (reads, argument) if reads > 0 else None


def find_in_pages(
    pages: Iterable[Mapping[str, Any]],
    items_key: str,
    matches: Callable[[Mapping[str, Any]], bool],
    *,
    max_items: int = 1000,
) -> Mapping[str, Any] | None:
    """
    The first item under ``items_key`` of a paginator's pages for which ``matches`` is true.

    Stops after ``max_items`` items (a lookup must stay bounded on a service with a long
    history): list newest first where the API allows, so that the job of a recent intent is seen.
    """
    seen = 0
    for page in pages:
        for item in page.get(items_key) or []:
            if matches(item):
                return cast("Mapping[str, Any]", item)
            seen += 1
            if seen >= max_items:
                return None
    return None


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


#: AwsJobMixin's hooks under their 0.4 private names (0.5.0 made them public).
_RENAMED_HOOKS = {
    "_spec": "job_request",
    "_prepare": "prepare_try",
    "_adopt": "adopt_job",
    "_trigger": "job_trigger",
    "_defer_timeout": "defer_timeout",
    "_event_external_id": "event_external_id",
    "_resume": "resume_after_trigger",
    "_on_job_failed": "on_job_failed",
}


def _missing_hook(operator: object, hook: str, what: str) -> NotImplementedError:
    """The error for a hook a resumable AWS operator must write and did not."""
    return NotImplementedError(
        f"{type(operator).__name__} must implement {hook}: {what} "
        "(AwsJobMixin's hooks: docs/maintainers.md, 'The hooks')"
    )


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return f"a {type(value).__name__}"


class AwsJobMixin(ResumableJobMixin):
    """
    The AWS half of a resumable AWS operator: execute, errors, fingerprint, the not-waiting mode,
    and ``deferrable=True`` (defer to the stock trigger, resume through the engine).

    Subclasses implement :meth:`job_request` (validated, rendered request, no AWS call), :meth:`adopt_job`
    (set the stock operator's attributes for a job and persist its links), :meth:`job_trigger` and
    :meth:`event_external_id` (the deferral), and may override :meth:`defer_timeout`,
    :meth:`resume_after_trigger` and :meth:`on_job_failed`.
    """

    #: The stock operator's deferrable path waits for the job even with ``wait_for_completion=False``
    #: (Batch, EMR on EKS, EMR steps); so does the resumable one.
    deferral_always_waits: ClassVar[bool] = True
    #: Set by ``execute_complete`` when the trigger ended with an error while the job was active.
    _trigger_error: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Map a hook written under its 0.4 private name to the public one, with a warning."""
        super().__init_subclass__(**kwargs)
        for old, new in _RENAMED_HOOKS.items():
            if old in vars(cls) and new not in vars(cls):
                warnings.warn(
                    f"{cls.__qualname__}.{old} is called {new} since airflow-resumable 0.5.0; "
                    f"rename it (the old name stops working in 1.0)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                setattr(cls, new, vars(cls)[old])

    if TYPE_CHECKING:  # set by the stock operators
        task_id: str
        deferrable: bool
        wait_for_completion: bool

        def defer(
            self,
            *,
            trigger: BaseTrigger,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn: ...

    def execute(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Validate the rendered arguments (no AWS call), then run the resumable engine.

        :param event: accepted for the stock signature (EMR Serverless); never set, since the
            application start is not deferred.
        """
        self._fingerprint = fingerprint_of(self.job_request())
        self._begin_try()
        self.prepare_try(context)
        return self.execute_resumable(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after the trigger fired: check the job, then finish through the engine.

        The job's own status decides, not the event: ended but not succeeded → :class:`JobFailedError`
        (the next try submits the next generation); succeeded → the engine adopts it and returns
        the stock result (record ``completed``); still active after a success event → the engine
        reconnects and defers again. Still active after an error event (the waiter's attempts ran
        out, an AWS error in the triggerer) → the try fails with :class:`ResumableError`, and the
        next try reconnects to the job through the record (a failure for good cancels it, as
        ``cancel_on_failure`` says).

        :param event: the trigger's event (``status`` plus the job's id).
        """
        self._begin_try()
        event = event if isinstance(event, dict) else {}
        external_id = self.event_external_id(event)
        if external_id is None:
            external_id = self._recorded_external_id(context)
        if external_id is None or not self.is_valid_external_id(external_id):
            raise ResumableError(
                f"{self.service_name}: the trigger's event names no job and no job is recorded: {event!r}"
            )
        self.resume_after_trigger(external_id, event, context)
        status = self._retrying(self.get_job_status, external_id, context, what="get_job_status")
        if not self.is_job_active(status) and not self.is_job_succeeded(status):
            self.on_job_failed(external_id, context)
            if self.durable and context.get("task_state_store") is not None:
                self._forget_in_ledger(context)  # the job ended: nothing left in flight
            raise JobFailedError(
                self.service_name, external_id, status, self.describe_failure(external_id, status, context)
            )
        if event.get("status") != "success" and self.is_job_active(status):
            self._trigger_error = str(event.get("message") or event or "the trigger sent no event")
        if self.durable and context.get("task_state_store") is not None:
            return self.execute_resumable(context)  # reconnect (defers again) or adopt the success
        if self._trigger_error is not None:
            raise self._trigger_failure(external_id)
        return self._wait_and_finish(external_id, context)

    def _begin_try(self) -> None:
        """Per-call set-up shared by ``execute`` and ``execute_complete``."""
        self._trigger_error = None
        if getattr(self, "deferrable", False) and self.deferral_always_waits:
            self.wait_for_completion = True  # the stock deferrable path waits whatever it says

    def job_request(self) -> dict[str, Any]:
        """
        The validated, rendered request (before our token or marker), as fingerprinted. No AWS call.

        Raise :class:`~airflow_resumable.exceptions.InvalidJobSpecError` here for bad input, so it is
        refused before any cloud call. Required.
        """
        raise _missing_hook(self, "job_request()", "return the validated, rendered request as a dict")

    def prepare_try(self, context: Context) -> None:
        """Per-try work of the stock ``execute`` that comes before any job (XComs, links)."""

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """
        Make ``external_id`` this operator's job: set the stock operator's attributes (``job_id``,
        ...) and persist its extra links, as the stock ``execute`` does once it has an id. Called on
        every path that has a job: fresh, reconnected, adopted, after a deferral. Required.
        """
        raise _missing_hook(
            self, "adopt_job(external_id, context)", "set the stock attributes and links for the job"
        )

    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> BaseTrigger:
        """
        The trigger that waits for the job with ``deferrable=True``: the stock trigger's arguments,
        plus ``resumable`` when the trigger is one of ours. Required when the stock operator defers.
        """
        raise _missing_hook(
            self, "job_trigger(external_id, resumable)", "return the trigger that waits for the job"
        )

    def defer_timeout(self) -> timedelta | None:
        """The deferral's timeout, as the stock operator sets it."""
        return None

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        """The job the trigger's event is about (None if it names none). Required when deferrable."""
        raise _missing_hook(
            self, "event_external_id(event)", "return the job id the trigger's event names, or None"
        )

    def resume_after_trigger(self, external_id: JsonValue, event: dict[str, Any], context: Context) -> None:
        """What ``execute_complete`` needs before its first status call (the XComs are still there)."""

    def on_job_failed(self, external_id: JsonValue, context: Context) -> None:
        """The stock operator's work on a failed job before it raises (links); best effort."""

    def job_fingerprint(self, context: Context) -> str | None:
        """A hash of the validated request; the request itself is never stored or logged."""
        fingerprint: str | None = self.__dict__.get("_fingerprint")
        if fingerprint is None:
            fingerprint = self._fingerprint = fingerprint_of(self.job_request())
        return fingerprint

    def _retrying(self, fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
        """
        ``fn`` as a cloud call outside the mixin's own (:meth:`ResumableJobMixin._cloud`): transient
        errors retried, throttling waited out, and a job that is not visible yet waited for.
        """
        return cast("T", self._cloud(fn, *args, what=what, **kwargs))

    def is_transient_error(self, error: BaseException) -> bool:
        """Throttling (``ThrottlingException`` and kin), 429, 5xx and connection errors."""
        return is_transient_aws_error(error) or super().is_transient_error(error)

    def is_throttling_error(self, error: BaseException) -> bool:
        """Throttling codes (``ThrottlingException``, ``TooManyRequestsException``, ...) and 429."""
        return is_throttling_aws_error(error) or super().is_throttling_error(error)

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """
        Persist the stock links, then wait: the mixin's signal-aware poll loop, or a deferral.

        With ``wait_for_completion=False`` the task ends once the job exists, as the stock operator
        does, and the job is never cancelled by this task. Deferrable, the job is handed to the
        trigger only while it is active (its id is already in the record, phase ``submitted``);
        a job that ended finishes here.
        """
        self.adopt_job(external_id, context)
        if not getattr(self, "wait_for_completion", True):
            self.stop_waiting(
                self._retrying(self.get_job_status, external_id, context, what="get_job_status")
            )
            self.log.info("Not waiting for the job (wait_for_completion=False)", external_id=external_id)
            return
        if getattr(self, "deferrable", False):
            status = self._retrying(self.get_job_status, external_id, context, what="get_job_status")
            if self.is_job_active(status):
                if self._trigger_error is not None:
                    raise self._trigger_failure(external_id)
                self._defer(external_id, context)
        try:
            super().poll_until_complete(external_id, context)
        except JobFailedError:
            self.on_job_failed(external_id, context)
            raise

    def _defer(self, external_id: JsonValue, context: Context) -> None:
        """Hand the wait to the triggerer; the job id is already in the record (phase submitted)."""
        # No ``ti`` (a unit test's bare context): no task instance, so no ledger entry to name.
        has_ti = context.get("ti") is not None
        key = ledger_key(TaskIdentity.from_context(context)) if has_ti else None
        resumable = {
            "cancel_on_user_stop": self.cancel_on_user_stop,
            "stop_classification_timeout": self.stop_classification_timeout,
            "ledger_key": key if self.keep_ledger and self.durable else None,
        }
        self.log.info("Deferring until the job ends", external_id=external_id)
        self.defer(
            trigger=self.job_trigger(external_id, resumable),
            method_name="execute_complete",
            timeout=self.defer_timeout(),
        )

    def _trigger_failure(self, external_id: JsonValue) -> ResumableError:
        return ResumableError(
            f"{self.service_name} job {external_id} is still active but its trigger ended with an "
            f"error: {self._trigger_error}. A retry reconnects to the job."
        )

    def _recorded_external_id(self, context: Context) -> JsonValue:
        """The job id of the record (else the bare id) in the task state store, or None."""
        store = context.get("task_state_store") if self.durable else None
        if store is None:
            return None
        try:
            record = JobRecord.from_json(store.get(RECORD_KEY))
            if record.external_id is not None:
                return record.external_id
        except Exception:  # absent or unreadable: try the bare id
            pass
        try:
            value: JsonValue = store.get(self.external_id_key)
        except Exception:
            return None
        return value
