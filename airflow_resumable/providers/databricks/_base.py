"""
The resumable mixin's hooks, mapped onto the Databricks Jobs API; shared by both operators.

Private: the public classes live in :mod:`airflow_resumable.providers.databricks.operators`. This
module only translates (status strings, ids, errors, XComs, deferral); every resume decision stays
in :class:`~airflow_resumable.mixin.ResumableJobMixin`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks_base import BaseDatabricksHook
from airflow.providers.databricks.utils.databricks import validate_trigger_event
from tenacity import RetryError

from airflow_resumable._custodian_policy import clamp_call_timeout, require_connection
from airflow_resumable.exceptions import JobFailedError, JobNotFoundError, RecipeRefusedError
from airflow_resumable.ledger import ledger_key
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.providers.databricks import _status
from airflow_resumable.providers.databricks._spec import databricks_idempotency_token, spec_fingerprint
from airflow_resumable.providers.databricks.triggers import ResumableDatabricksExecutionTrigger
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

#: XCom keys of the stock operators (``airflow.providers.databricks.operators.databricks``).
XCOM_RUN_ID_KEY = "run_id"
XCOM_RUN_PAGE_URL_KEY = "run_page_url"
XCOM_JOB_ID_KEY = "job_id"
_MISSING_RUN_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class DatabricksRunMixin(ResumableJobMixin):
    """
    The Databricks half of a resumable Databricks operator: status, ids, errors, XComs, deferral.

    Subclasses name the endpoint and build the payload (:meth:`_checked_payload`,
    :meth:`_payload_for_submit`, :meth:`_send`).
    """

    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = "Databricks"
    visibility_key: ClassVar[str] = "databricks"
    #: ``"runs/submit"`` or ``"run-now"``: part of the spec fingerprint.
    _endpoint: ClassVar[str] = ""

    if TYPE_CHECKING:  # set by the stock operator
        _hook: DatabricksHook
        task_id: str
        run_id: int | None
        do_xcom_push: bool
        deferrable: bool
        wait_for_termination: bool
        polling_period_seconds: int
        databricks_conn_id: str
        databricks_retry_limit: int
        databricks_retry_delay: int
        databricks_retry_args: dict[Any, Any] | None

        def defer(self, *, trigger: Any, method_name: str, **kwargs: Any) -> Any: ...

    # ------------------------------------------------------------------ subclass responsibilities
    def _checked_payload(self) -> dict[str, Any]:
        """Validate the rendered arguments (no HTTP) and return the payload to fingerprint."""
        raise NotImplementedError

    def _payload_for_submit(self, context: Context) -> dict[str, Any]:
        """The stock operator's own payload preparation (may call the API, e.g. to resolve names)."""
        raise NotImplementedError

    def _send(self, payload: dict[str, Any]) -> int:
        """Submit the payload; return the run id."""
        raise NotImplementedError

    # ------------------------------------------------------------------ entry points
    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``polling_period_seconds``."""
        return float(self.polling_period_seconds)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.polling_period_seconds = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def execute(self, context: Context) -> Any:
        """Validate the spec, then run the resumable engine (deferrable or not)."""
        self._fingerprint = self._spec_fingerprint()
        self._note_inherited_intent(context)
        self._xcoms_pushed_for: int | None = None
        return self.execute_resumable(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after the trigger fired: finish through the engine, or fail with the run's error.

        :param context: the task context (typed ``Any``: the two stock signatures differ).
        :param event: the :class:`ResumableDatabricksExecutionTrigger` event.
        """
        if not event:
            raise JobFailedError(self.service_name, self.run_id, "NO_EVENT", "the trigger sent no event")
        validate_trigger_event(event)
        run_id = int(event["run_id"])
        self.run_id = run_id
        self._xcoms_pushed_for = None
        status = self._current_status(run_id, context)
        if self.is_job_active(status) or self.is_job_succeeded(status):
            if self.durable and context.get("task_state_store") is not None:
                self._note_inherited_intent(context)
                return self.execute_resumable(context)  # reconnect (defers again) or adopt the success
            self.poll_until_complete(run_id, context)
            return self.get_job_result(run_id, context)
        if self._repair_after_failure(run_id, context, event=event):
            self.poll_until_complete(run_id, context)  # defers again (or ends at once)
            return self.get_job_result(run_id, context)
        errors = "; ".join(_event_error(item) for item in event.get("errors") or [])
        raise JobFailedError(
            self.service_name, run_id, status, errors or self.describe_failure(run_id, status, context)
        )

    # ------------------------------------------------------------------ the mixin's hooks
    def job_fingerprint(self, context: Context) -> str | None:
        """Hash of the validated payload, without the idempotency token; never the payload."""
        fingerprint: str | None = self.__dict__.get("_fingerprint")
        if fingerprint is None:
            fingerprint = self._fingerprint = self._spec_fingerprint()
        return fingerprint

    def submit_job(self, context: Context) -> int:
        """Submit with ``idempotency_token`` = our token (combined with a user's token, if any)."""
        payload = self._payload_for_submit(context)
        user_token = payload.pop("idempotency_token", None)
        token = databricks_idempotency_token(self.submission_token, user_token)
        if token is not None:
            payload["idempotency_token"] = token
        self.run_id = self._send(payload)
        return self.run_id

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """
        ``"LIFE_CYCLE:RESULT"`` of the run (see :mod:`._status`).

        :raises JobNotFoundError: runs/get answered 404, or 400 "does not exist" (expired history).
        """
        return _status.run_status(self._fetch_run(as_run_id(external_id)))

    def is_job_active(self, status: str) -> bool:
        """Active life cycle states, a repair in progress, and states we do not know."""
        return _status.is_active(status)

    def is_job_succeeded(self, status: str) -> bool:
        """Only ``TERMINATED:SUCCESS``."""
        return _status.is_succeeded(status)

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """
        Push the stock XComs, then wait: the mixin's signal-aware loop, or a deferral.

        Deferrable, the run is handed to the stock trigger only while its life cycle state is one
        the trigger waits on; a repair behind a terminated state is polled here.

        With ``wait_for_termination=False`` the task ends once the run exists (as in stock), and the
        run is never cancelled by this task.
        """
        run_id = as_run_id(external_id)
        self.run_id = run_id
        self._push_run_xcoms(run_id, context)
        if not self.wait_for_termination:
            self.stop_waiting(self._current_status(run_id, context))
            self.log.info("Not waiting for the run (wait_for_termination=False)", run_id=run_id)
            return
        if self.deferrable and _status.trigger_waits(self._current_status(run_id, context)):
            self._defer(run_id, context)
        super().poll_until_complete(external_id, context)

    def get_job_result(self, external_id: JsonValue, context: Context) -> None:
        """None, as the stock ``execute``; pushes the XComs if this attempt has not yet."""
        run_id = as_run_id(external_id)
        self.run_id = run_id
        if self.__dict__.get("_xcoms_pushed_for") != run_id:
            self._push_run_xcoms(run_id, context)
        return None

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """runs/cancel."""
        self._hook.cancel_run(as_run_id(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """runs/cancel through the same connection, for the custodian (:func:`cancel_run_by_recipe`)."""
        return "databricks_run", {
            "databricks_conn_id": self.databricks_conn_id,
            "retry_limit": self.databricks_retry_limit,
            "retry_delay": float(self.databricks_retry_delay),
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The run's ``state_message``, the errors of its failed tasks, and its page."""
        run_id = as_run_id(external_id)
        try:
            run = self._cached_run(run_id)
            parts = [_status.failure_message(run), *self._failed_task_errors(run)]
            if run.get("run_page_url"):
                parts.append(f"see {run['run_page_url']}")
        except Exception as err:  # the failure itself must surface, not a failure to describe it
            self.log.warning("Could not read the failed run's details", run_id=run_id, error=repr(err))
            return ""
        return "; ".join(part for part in parts if part)

    def is_transient_error(self, error: BaseException) -> bool:
        """
        429, 5xx and connection errors, also once the hook's own retries gave up.

        The hook raises ``AirflowException`` from a ``tenacity.RetryError`` after its retries;
        the last attempt's error says whether it was transient.
        """
        if super().is_transient_error(error):
            return True
        if isinstance(error, DatabricksApiError):
            code = error.http_status_code or 0
            return code == 429 or code >= 500
        if isinstance(error, requests.RequestException):
            return BaseDatabricksHook._retryable_error(error)
        cause = error.__cause__
        if isinstance(cause, RetryError):
            last = cause.last_attempt.exception()
            return last is not None and (
                BaseDatabricksHook._retryable_error(last) or isinstance(last, (ConnectionError, TimeoutError))
            )
        return False

    def is_throttling_error(self, error: BaseException) -> bool:
        """
        HTTP 429 (``REQUEST_LIMIT_EXCEEDED``), also once the hook's own retries gave up on it:
        the workspace refused the call, so it is sent again within ``throttle_patience``.
        """
        if super().is_throttling_error(error):
            return True
        if isinstance(error, DatabricksApiError):
            return error.http_status_code == 429
        last: BaseException | None = error
        if isinstance(error.__cause__, RetryError):
            last = error.__cause__.last_attempt.exception()
        response = getattr(last, "response", None)
        return isinstance(last, requests.HTTPError) and getattr(response, "status_code", None) == 429

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A Databricks run id: a positive integer (or its decimal string)."""
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value > 0
        return isinstance(value, str) and value.isdigit() and int(value) > 0

    # ------------------------------------------------------------------ helpers
    def _spec_fingerprint(self) -> str:
        return spec_fingerprint(self._endpoint, self._checked_payload())

    def _operator_label(self) -> str:
        return f"{type(self).__name__}(task_id={self.task_id!r})"

    def _repair_after_failure(self, run_id: int, context: Context, *, event: dict[str, Any] | None) -> bool:
        """
        Start a repair of the failed run if the operator asks for one; True if it did.

        :param event: the trigger's event when deferrable (its ``repair_run`` says whether this
            deferral may still repair); None when polling.
        """
        return False  # SubmitRun has no repair_run; RunNow overrides

    def _fetch_run(self, run_id: int) -> dict[str, Any]:
        """runs/get, kept as the last run read; :class:`JobNotFoundError` for a missing run."""
        try:
            run: dict[str, Any] = self._hook.get_run(run_id)
        except DatabricksApiError as err:
            if _is_missing_run(err):
                raise JobNotFoundError(
                    f"Databricks run {run_id} does not exist (its history expired or it was deleted)."
                ) from err
            raise
        self._last_run = (run_id, run)
        return run

    def _current_status(self, run_id: int, context: Context) -> str:
        return str(self._cloud(self.get_job_status, run_id, context, what="get_job_status"))

    def _cached_run(self, run_id: int) -> dict[str, Any]:
        cached = self.__dict__.get("_last_run")
        if cached is not None and cached[0] == run_id:
            return dict(cached[1])
        return self._hook.get_run(run_id)

    def _failed_task_errors(self, run: dict[str, Any]) -> list[str]:
        """Like the stock ``extract_failed_task_errors``: the latest attempt of each failed task."""
        latest: dict[str, dict[str, Any]] = {}
        for task in run.get("tasks") or []:
            key = str(task.get("task_key"))
            if key not in latest or task.get("attempt_number", 0) >= latest[key].get("attempt_number", 0):
                latest[key] = task
        errors = []
        for key, task in latest.items():
            if (task.get("state") or {}).get("result_state") == "FAILED" and task.get("run_id"):
                output = self._hook.get_run_output(int(task["run_id"]))
                errors.append(f"task {key} (run {task['run_id']}): {output.get('error') or 'failed'}")
        return errors

    def _push_run_xcoms(self, run_id: int, context: Context) -> None:
        """``run_id`` and ``run_page_url`` (plus ``job_id`` when deferrable), as the stock operator."""
        self._xcoms_pushed_for = run_id
        ti = context.get("ti")
        if not self.do_xcom_push or ti is None:  # stock pushes nothing without a context either
            return
        if self.deferrable:
            ti.xcom_push(key=XCOM_JOB_ID_KEY, value=self._run_field(run_id, "job_id"))
        ti.xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        url = self._run_field(run_id, "run_page_url")
        ti.xcom_push(key=XCOM_RUN_PAGE_URL_KEY, value=url)
        self.log.info("View run status, Spark UI, and logs", run_id=run_id, run_page_url=url)

    def _run_field(self, run_id: int, field: str) -> Any:
        """A field of the run that never changes (page url, job id): from the last runs/get if any."""
        cached = self.__dict__.get("_last_run")
        if cached is not None and cached[0] == run_id and field in cached[1]:
            return cached[1][field]
        run: dict[str, Any] = self._cloud(self._fetch_run, run_id, what="get_run")
        return run.get(field)

    def _defer(self, run_id: int, context: Context) -> None:
        """Hand the wait to the triggerer; the run id is already in the record (phase submitted)."""
        url = self._run_field(run_id, "run_page_url")
        self.log.info("Deferring until the run ends", run_id=run_id)
        # No ``ti`` (a unit test's bare context): no task instance, so no ledger entry to name.
        has_ti = context.get("ti") is not None
        key = ledger_key(TaskIdentity.from_context(context)) if has_ti else None
        self.defer(
            trigger=ResumableDatabricksExecutionTrigger(
                run_id=run_id,
                databricks_conn_id=self.databricks_conn_id,
                polling_period_seconds=self.polling_period_seconds,
                retry_limit=self.databricks_retry_limit,
                retry_delay=self.databricks_retry_delay,
                retry_args=self.databricks_retry_args,
                run_page_url=url,
                repair_run=bool(getattr(self, "repair_run", False)),
                caller=type(self).__name__,
                cancel_on_user_stop=self.cancel_on_user_stop,
                stop_classification_timeout=self.stop_classification_timeout,
                ledger_key=key if self.keep_ledger and self.durable else None,
            ),
            method_name="execute_complete",
        )

    def _note_inherited_intent(self, context: Context) -> None:
        """
        Remember the token of an intent an earlier try left without a run id.

        Resubmitting that token may return a run the earlier try created; RunNow must then not
        ``cancel_previous_runs`` (it would cancel that very run).
        """
        self._inherited_token: str | None = None
        store = context.get("task_state_store") if self.durable else None
        if store is None:
            return
        try:
            record = JobRecord.from_json(store.get(RECORD_KEY))
        except Exception:  # absent, unreadable or unreachable: the engine reads it again and decides
            return
        if record.phase == "intent":
            self._inherited_token = record.token


#: The most attempts and the longest first wait (seconds) of a custodian cancel, whatever the
#: operator's ``databricks_retry_limit``/``databricks_retry_delay`` (a recipe carries them).
RECIPE_MAX_RETRY_LIMIT = 3
RECIPE_MAX_RETRY_DELAY = 5.0


def cancel_run_by_recipe(
    external_id: JsonValue,
    *,
    databricks_conn_id: str | None = None,
    retry_limit: int = 3,
    retry_delay: float = 1.0,
) -> None:
    """
    The custodian's canceller ``databricks_run``: runs/cancel of a run no task polls any more.

    The recipe's retry arguments are bounded (at most :data:`RECIPE_MAX_RETRY_LIMIT` attempts, a
    first wait of at most :data:`RECIPE_MAX_RETRY_DELAY` s) and each request gets an equal share of
    ``[resumable] custodian_call_timeout_seconds`` (at least 1 s): at 30 s, three requests of 10 s
    at most, plus the hook's waits between them (8 s at most each).

    :raises RecipeRefusedError: no ``databricks_conn_id``, or retry arguments that are no numbers.

    .. versionchanged:: 0.3.0 refuses a recipe without a connection; bounded retries and timeouts.
    """
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    from airflow_resumable._config import setting

    conn_id = require_connection(
        databricks_conn_id, argument="databricks_conn_id", canceller="databricks_run"
    )
    limit, delay = bounded_retry(retry_limit, retry_delay)
    call_timeout = clamp_call_timeout(setting("custodian_call_timeout_seconds"))
    request_timeout = max(1, int(call_timeout // limit))
    hook = DatabricksHook(
        conn_id,
        timeout_seconds=request_timeout,
        retry_limit=limit,
        retry_delay=delay,
        caller="airflow_resumable.custodian",
    )
    # Token requests (Azure AD, OAuth) have their own timeout, 10 s by default.
    hook.token_timeout_seconds = min(hook.token_timeout_seconds, request_timeout)
    hook.cancel_run(as_run_id(external_id))


def bounded_retry(retry_limit: object, retry_delay: object) -> tuple[int, float]:
    """
    A recipe's ``(retry_limit, retry_delay)`` within the custodian's bounds.

    :raises RecipeRefusedError: either is not a number (a bool is not one), or is not finite.
    """
    if (
        isinstance(retry_limit, bool)
        or not isinstance(retry_limit, int)
        or isinstance(retry_delay, bool)
        or not isinstance(retry_delay, (int, float))
        or not math.isfinite(retry_delay)
    ):
        raise RecipeRefusedError(
            "The custodian's canceller 'databricks_run' refuses retry_limit="
            f"{retry_limit!r}, retry_delay={retry_delay!r}: not numbers"
        )
    return (
        min(max(retry_limit, 1), RECIPE_MAX_RETRY_LIMIT),
        min(max(float(retry_delay), 0.0), RECIPE_MAX_RETRY_DELAY),
    )


def as_run_id(external_id: JsonValue) -> int:
    """The run id as the hook wants it (an int); ids are validated before they get here."""
    if isinstance(external_id, bool) or not isinstance(external_id, (int, str)):
        raise JobNotFoundError(f"{external_id!r} is not a Databricks run id")
    return int(external_id)


def _is_missing_run(error: DatabricksApiError) -> bool:
    """
    A 404 ``RESOURCE_DOES_NOT_EXIST``, or a 400 that says the run does not exist. Not any 404: a
    gateway answers 404 ``{"error": "Bad Target: ..."}`` for a path it does not serve
    (apache/airflow#60444) and the API 404 ``ENDPOINT_NOT_FOUND``, while the run goes on.
    """
    text = str(error)
    if error.http_status_code == 404:
        return "RESOURCE_DOES_NOT_EXIST" in text
    return (
        error.http_status_code == 400
        and any(code in text for code in _MISSING_RUN_CODES)
        and "does not exist" in text.lower()
    )


def _event_error(item: Any) -> str:
    if isinstance(item, dict):
        return f"task {item.get('task_key')} (run {item.get('run_id')}): {item.get('error')}"
    return str(item)
