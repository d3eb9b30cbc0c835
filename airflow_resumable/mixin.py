"""
``ResumableJobMixin``: exactly-once submission and reconnection for operators that run one remote job.

It keeps the contract of Airflow's own :class:`airflow.sdk.ResumableJobMixin` (same six hooks,
``external_id_key``, ``durable``, ``execute_resumable``) and adds an intent record written before
every submission, submission tokens, spec-change detection, cancellation and bounded retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

import tenacity
from airflow.sdk import ResumableJobMixin as CoreResumableJobMixin
from airflow.sdk.bases.operator import BaseOperatorMeta
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowTaskTimeout, TaskDeferred
from airflow.sdk.observability.stats import Stats
from opentelemetry import trace

from airflow_resumable import _patience, _running
from airflow_resumable._config import setting
from airflow_resumable._decision import Backend, Decision, decide
from airflow_resumable._retention import record_retention
from airflow_resumable._stopping import Interrupted, StopHandlingMixin
from airflow_resumable._trust import Verdict
from airflow_resumable.exceptions import (
    JobFailedError,
    JobNotFoundError,
    ResumableError,
    StateStoreUnavailableError,
    ThrottledError,
    TransientCloudError,
)
from airflow_resumable.ledger import (
    LEDGER_CONTEXT_KEY,
    VariableLedger,
    ledger_entry,
    ledger_key,
    record_from_entry,
)
from airflow_resumable.record import (
    RECORD_KEY,
    JobRecord,
    RecordFormatError,
    TaskIdentity,
    cancel_failure,
    record_verdict,
    seal_record,
)
from airflow_resumable.retry import (
    DEFAULT_CLOUD_RETRY,
    DEFAULT_STATE_STORE_RETRY,
    RetryPolicy,
    is_transient_state_store_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from airflow.sdk.definitions.context import Context
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe, JobLedger

__all__ = ["ResumableJobMixin"]

tracer = trace.get_tracer(__name__)
METRIC_PREFIX = "airflow_resumable"


class ResumableJobMixin(StopHandlingMixin, CoreResumableJobMixin):
    """
    Run one remote job per intended submission, and find it again after any disruption.

    **Purpose:** a drop-in base for operators that submit a long remote job and wait for it. A
    retry, a reschedule or a class swap from the stock operator reconnects to the job that is
    already running instead of cancelling it, orphaning it or submitting a duplicate.

    **How it works:** every attempt starts with one decision (see ``docs/concepts.md``):

    ============================================  ==============================================
    found in ``task_state_store``                  action
    ============================================  ==============================================
    nothing                                        write an intent, submit (generation 1)
    intent, no id                                  resubmit with the same token (the service
                                                   deduplicates), or ``find_job(token)`` first
    id, job active                                 reconnect: poll the same job
    id, job succeeded                              return ``get_job_result`` without polling
    id, job failed / cancelled / not found         next generation, fresh token, submit
    spec fingerprint changed                       next generation, submit, warn
    bare id stored by the stock operator           adopt it (same table, by its status)
    unreadable record, no id to recover            fail without retry (never a silent duplicate)
    ============================================  ==============================================

    Before any cloud call an *intent* (generation, token, spec fingerprint) is written; the token is
    available to :meth:`submit_job` as ``self.submission_token``. Every path returns
    :meth:`get_job_result`, unlike the core mixin, whose reconnect path returns whatever
    ``poll_until_complete`` returns.

    **What it does not do:** it does not free the worker slot while polling (use deferrable mode
    for that) and never stores the job spec: only ids, tokens and hashes.

    **Provider hooks:** the six of the core mixin, plus :meth:`cancel_job`, :meth:`find_job` (for
    services without idempotency tokens) and :meth:`job_fingerprint`. Set
    ``submission_is_idempotent = True`` when the service deduplicates on the token.

    **Stops:** ``on_kill`` (Airflow's SIGTERM handler) and SIGINT only record the signal; the poll
    loop wakes at once and asks the server, with a bounded timeout, whether it still holds the try
    as running. If it does (or cannot be reached) the worker is shutting down: the job keeps
    running, the record is marked ``interrupted`` and the try ends ``up_for_reschedule`` after
    ``resume_delay`` (no retry consumed); the next try reconnects. Otherwise a user stopped the
    task: the job is cancelled. An ``execution_timeout`` cancels too, and so does a failure for
    good (no retries left) while the job may still be active. A clear that reaches the running try
    is a hand-over, not a stop: the job keeps running and the next try reconnects to it. What every
    user action means in every task state is one table, :mod:`airflow_resumable._custody`
    (``docs/stopping.md``).

    Arguments left as None take their value from the ``[resumable]`` section of the Airflow
    configuration (see ``docs/configuration.md``), else the built-in default shown.

    :param durable: as in the core mixin; False disables every record and reconnection.
    :param cloud_retry: retries of transient cloud errors (see :meth:`is_transient_error`).
    :param state_store_retry: retries of task-state-store reads and writes (5xx, throttling and
        lost connections; any other 4xx, e.g. a 404 once the state was cleared, is final).
    :param resume_delay: how long after a worker-shutdown checkpoint the task resumes (15 s).
    :param max_resumes: consecutive checkpoints allowed per job; the next shutdown fails the task (3).
    :param cancel_on_user_stop: cancel the job when a user stops the task (marks it failed or
        success, clears it, deletes the run).
    :param cancel_on_timeout: cancel the job when ``execution_timeout`` is reached.
    :param cancel_on_failure: cancel a possibly active job when the task fails for good.
    :param on_checkpoint_callback: called like Airflow's task callbacks, with the context plus a
        ``checkpoint`` entry, whenever a worker shutdown becomes a checkpoint.
    :param stop_classification_timeout: seconds to wait for the server's answer after a signal (3).
    :param cancel_on_spec_change: when a clear re-runs the task with a changed job spec, cancel the
        earlier generation's job if it is still active, before submitting the new spec (True).
        ``.. versionadded:: 0.2.0``
    :param keep_ledger: keep a copy of the record of each job in flight in an Airflow Variable
        (:mod:`airflow_resumable.ledger`), so that a clear that deletes the task state store cannot
        lead to a second job (True). ``.. versionadded:: 0.2.0``
    :param visibility_window: seconds after its submission during which a job the service does not
        find is *not yet visible* (eventual consistency), not expired: status reads are tried
        again and ``find_job`` keeps looking before anything is resubmitted. Default: the
        operator's ``default_visibility_window`` (see :mod:`airflow_resumable._patience`).
        ``.. versionadded:: 0.4.0``
    :param throttle_patience: seconds a throttled cloud call keeps being retried (backoff with full
        jitter); throttled calls do not count against ``cloud_retry`` (600).
        ``.. versionadded:: 0.4.0``

    .. versionadded:: 0.1.0
    """

    #: Key of the bare external id, shared with the stock operator so that ids it stored are
    #: adopted. Renaming it on a deployed operator breaks in-flight retries.
    external_id_key: str = "remote_job_id"
    #: True when the service returns the existing job for a repeated token (Databricks, EMR).
    submission_is_idempotent: ClassVar[bool] = False
    #: Name of the remote service in logs and error messages.
    service_name: ClassVar[str] = "remote"
    #: Seconds between status calls in the default :meth:`poll_until_complete`.
    resumable_poll_interval: float = 5.0
    #: Seconds after its submission during which the service may not find a new job (see
    #: ``visibility_window``); 0 for a service that finds every job it accepted at once.
    default_visibility_window: ClassVar[float] = 60.0
    #: The operator's key in ``[resumable] visibility_window_seconds`` (a JSON object by service).
    visibility_key: ClassVar[str] = ""

    submission_token: str | None = None
    #: The task instance of the record this try reads and writes (set by the decision).
    _record_identity: TaskIdentity | None = None
    #: Whether the process has said once that there is no key to seal records with.
    _warned_no_key: ClassVar[bool] = False

    @BaseOperatorMeta._apply_defaults  # type: ignore[type-var]  # same as the core mixin: an MRO guarantee
    def __init__(
        self,
        *,
        cloud_retry: RetryPolicy | None = None,
        state_store_retry: RetryPolicy | None = None,
        resume_delay: timedelta | float | None = None,
        max_resumes: int | None = None,
        cancel_on_user_stop: bool | None = None,
        cancel_on_timeout: bool | None = None,
        cancel_on_failure: bool | None = None,
        on_checkpoint_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        stop_classification_timeout: float | None = None,
        cancel_on_spec_change: bool | None = None,
        keep_ledger: bool | None = None,
        visibility_window: float | None = None,
        throttle_patience: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cancel_on_spec_change: bool = _or_setting(cancel_on_spec_change, "cancel_on_spec_change")
        self.keep_ledger: bool = _or_setting(keep_ledger, "keep_ledger")
        self.visibility_window: float = _patience.visibility_window(
            self.visibility_key or type(self).__name__, self.default_visibility_window, visibility_window
        )
        self.throttle_patience: float = float(_or_setting(throttle_patience, "throttle_patience_seconds"))
        # None means "the [resumable] section of the Airflow configuration, else the built-in default".
        self._init_stop_policy(
            resume_delay=setting("resume_delay_seconds") if resume_delay is None else resume_delay,
            max_resumes=setting("max_resumes") if max_resumes is None else max_resumes,
            cancel_on_user_stop=_or_setting(cancel_on_user_stop, "cancel_on_user_stop"),
            cancel_on_timeout=_or_setting(cancel_on_timeout, "cancel_on_timeout"),
            cancel_on_failure=_or_setting(cancel_on_failure, "cancel_on_failure"),
            on_checkpoint_callback=on_checkpoint_callback,
            stop_classification_timeout=_or_setting(
                stop_classification_timeout, "stop_classification_timeout"
            ),
        )
        self.cloud_retry = cloud_retry or DEFAULT_CLOUD_RETRY
        self.state_store_retry = state_store_retry or DEFAULT_STATE_STORE_RETRY
        self.submission_token = None
        self._current_record: JobRecord | None = None
        self._final_status: str | None = None

    # ----------------------------------------------------------------- hooks added by this mixin
    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """Ask the service to stop the job. Called for a user's stop, a timeout or a final failure."""
        raise NotImplementedError(f"{type(self).__name__} does not implement cancel_job")

    def find_job(self, token: str, context: Context) -> JsonValue:
        """
        Return the id of the job that ``token`` created (by tag or name), or None if there is none.

        Only needed when ``submission_is_idempotent`` is False; a None answer must be authoritative,
        since the mixin then submits with the same token.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement find_job")

    def job_fingerprint(self, context: Context) -> str | None:
        """
        A hash of the rendered submission, never the spec (see :func:`~.record.fingerprint_of`).

        None turns spec-change detection off.
        """
        return None

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """
        How the custodian cancels this operator's job when no worker or trigger watches it.

        A name registered in :data:`airflow_resumable.custodian.CANCELLERS` and the JSON keyword
        arguments it takes besides the job id: connection ids, regions, resource ids, never a
        secret (the recipe is stored in the ledger). None: the custodian can only report the job.

        .. versionadded:: 0.2.0
        """
        return None

    def is_transient_error(self, error: BaseException) -> bool:
        """True for errors of cloud calls worth retrying (throttling, 5xx, lost connections)."""
        return isinstance(error, (TransientCloudError, ConnectionError, TimeoutError))

    def is_throttling_error(self, error: BaseException) -> bool:
        """
        True when the service refused the call for its rate (HTTP 429, ``ThrottlingException``).

        A throttled call was not carried out, so it is sent again, for up to
        ``throttle_patience`` seconds, without counting against ``cloud_retry`` and even for a
        submission the service cannot deduplicate. By default: :class:`~.exceptions.ThrottledError`.

        .. versionadded:: 0.4.0
        """
        return isinstance(error, ThrottledError)

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """True if ``value`` can be an id of this service; guards against foreign stored values."""
        return (isinstance(value, str) and bool(value)) or (
            isinstance(value, int) and not isinstance(value, bool)
        )

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """Extra detail for :class:`JobFailedError` (the service's error message); empty by default."""
        return ""

    def max_status_reads(self) -> tuple[int, str] | None:
        """
        The stock operator's bound on its wait, for the poll loop: the number of status reads
        after which a try gives up on a job that is still active, and the argument that sets it
        (``(60, "waiter_max_attempts")``). None (the default): no bound, the try waits until the
        job ends or ``execution_timeout``.

        .. versionadded:: 0.5.0
        """
        return None

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """
        Poll every ``resumable_poll_interval`` seconds until the job leaves its active states.

        :raises JobFailedError: the job ended in any state but success.
        :raises ResumableError: the job is still active after :meth:`max_status_reads` reads, as
            the stock operator's waiter gives up. The job keeps running; a retry reconnects to it
            (a try that fails for good cancels it when ``cancel_on_failure`` is on).
        """
        bound = self.max_status_reads()
        reads = 0
        while True:
            status = self._cloud(self.get_job_status, external_id, context, what="get_job_status")
            reads += 1
            if not self.is_job_active(status):
                break
            if bound is not None and reads >= bound[0]:
                raise ResumableError(
                    f"{self.service_name} job {external_id!r} is still {status} after {reads} status "
                    f"reads ({bound[1]}={bound[0]}, as in the stock operator). It keeps running; a "
                    f"retry reconnects to it."
                )
            self._raise_if_interrupted()
            self._sleep_between_polls(self.resumable_poll_interval)
        self._final_status = status
        if not self.is_job_succeeded(status):
            raise JobFailedError(
                self.service_name, external_id, status, self.describe_failure(external_id, status, context)
            )

    def stop_waiting(self, status: Any) -> None:
        """
        Declare the wait over, ``status`` being the job's last known status.

        For a provider's fire-and-forget mode (the stock ``wait_for_termination=False``), called
        from ``poll_until_complete`` instead of waiting: the engine then neither checks that the
        job succeeded nor cancels it on a stop or a timeout; the job is no longer this try's to
        watch.
        """
        self._final_status = status

    def resume_waiting(self) -> None:
        """Declare the job active again (a repair restarted it): a stop or a timeout cancels it again."""
        self._final_status = None

    # ------------------------------------------------------------------------------ the engine
    def execute_resumable(self, context: Context) -> Any:
        """
        Decide, then submit, reconnect or return the result; always returns ``get_job_result``.

        Stop signals received meanwhile end the try as described in the class docstring.
        """
        store = context.get("task_state_store") if self.durable else None
        self._current_record = None
        self._final_status = None
        watch = self._start_watch()
        self._register_running(context)
        try:
            with watch.catching_sigint():
                return self._attempt(context, store)
        except Interrupted:
            self._handle_interruption(context, store)
            raise  # unreachable: the handler always raises
        except AirflowTaskTimeout:
            self._stop_remote_job(context, store, reason="execution_timeout", enabled=self.cancel_on_timeout)
            raise
        except (AirflowRescheduleException, TaskDeferred):
            raise
        except BaseException as error:
            if self._fails_for_good(context, error):
                self._stop_remote_job(
                    context, store, reason=f"task failed for good: {error!r}", enabled=self.cancel_on_failure
                )
            if self._final_status is not None and store is not None:
                self._forget_in_ledger(context)  # the job ended (failed): nothing left in flight
            raise
        finally:
            self._stop_watch()
            _running.unregister()

    def _attempt(self, context: Context, store: TaskStateStoreAccessor | None) -> Any:
        if store is None:
            if self.durable:
                self.log.warning("task_state_store not in context; crash recovery is off for this try")
            # Nothing is recorded: the identity only seeds the token. A context without ``ti`` (a
            # unit test calling ``execute({})``, as the stock operators allow) gets a bare one.
            ti_less = TaskIdentity(dag_id="", run_id="", task_id=str(getattr(self, "task_id", "")))
            identity = TaskIdentity.from_context(context) if context.get("ti") is not None else ti_less
            record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
            self._raise_if_interrupted()
            external_id = self._submit(record, context)
            self._current_record = record.evolve(external_id=external_id, phase="submitted")
            return self._wait_and_finish(external_id, context)

        decision = self._decide(store, context)
        record = decision.record
        self._current_record = record
        self._raise_if_interrupted()
        if decision.action == "submit":
            if decision.supersedes is not None:
                failure = self._cancel_superseded(
                    decision.supersedes, context, user_stop=decision.reason == "prior_stopped"
                )
                if failure is not None:  # the new generation's record names the job left running
                    record = record.evolve(cancel_failed=failure)
            self._save_record(store, record, context, required=True)
            self._current_record = record
            external_id = self._submit(record, context)
            record = record.evolve(external_id=external_id, phase="submitted")
            self._persist_submitted(store, record, context)
        else:
            external_id = record.external_id
            if decision.reason != "reconnect" and decision.reason != "already_succeeded":
                self._persist_submitted(store, record, context)  # adopted or recovered: make it ours
        self._current_record = record
        self._raise_if_interrupted()
        if decision.action == "return_result":
            result = self.get_job_result(external_id, context)
        else:
            result = self._wait_and_finish(external_id, context)
        self._save_record(store, record.evolve(phase="completed"), context, required=False)
        return result

    def _register_running(self, context: Context) -> None:
        """Tell this host's worker shutdown hooks (:mod:`airflow_resumable.celery`) that it runs here."""
        ti = context.get("ti")
        if ti is None:
            return
        label = f"{ti.dag_id}.{ti.task_id}[{getattr(ti, 'map_index', -1)}]"
        try:
            _running.register(str(getattr(ti, "id", "")), label)
        except OSError as error:  # only the Celery warm-shutdown bridge needs it: never fail the task
            self.log.warning("Could not register the running task for worker shutdowns", error=repr(error))

    def _cancel_superseded(
        self, external_id: JsonValue, context: Context, *, user_stop: bool = False
    ) -> dict[str, JsonValue] | None:
        """
        Cancel an earlier generation's job before its spec is replaced (a clear after a fix), or
        the job of a try a user stopped just before a clear (``user_stop``).

        :return: the failure to keep in the record (:func:`~airflow_resumable.record.cancel_failure`),
            or None.
        """
        # The log lines and reasons of the spec-change path are those of 0.2.0 (logs are searched).
        why, reason, switch, enabled = (
            (
                "a user stopped the try that owned it",
                "stopped_by_user",
                "cancel_on_user_stop",
                self.cancel_on_user_stop,
            )
            if user_stop
            else ("the job spec changed", "superseded", "cancel_on_spec_change", self.cancel_on_spec_change)
        )
        if not enabled:
            self.log.warning(
                f"{why[0].upper()}{why[1:]}; the earlier generation's job keeps running ({switch} is off)",
                external_id=external_id,
            )
            return None
        try:
            self._cloud(self.cancel_job, external_id, context, what="cancel_job")
        except Exception as err:
            self.log.error(
                "COULD NOT CANCEL the superseded remote job: it may be left running and must be "
                "stopped by hand",
                external_id=external_id,
                reason=why.removeprefix("the "),
                error=repr(err),
            )
            self._count("cancel_failed")
            return cancel_failure(external_id, f"superseded: {why}", err)
        self.log.warning(
            f"Cancelled the remote job of an earlier generation: {why}",
            external_id=external_id,
            reason=reason,
        )
        self._count("cancel")
        return None

    def _decide(self, store: TaskStateStoreAccessor, context: Context) -> Decision:
        identity = TaskIdentity.from_context(context)
        backend = Backend(
            identity=identity,
            external_id_key=self.external_id_key,
            fingerprint=self.job_fingerprint(context),
            submission_is_idempotent=self.submission_is_idempotent,
            get_status=lambda job_id: self._cloud(
                self.get_job_status, job_id, context, what="get_job_status", born=None
            ),
            await_status=lambda job_id, born: self._cloud(
                self.get_job_status, job_id, context, what="get_job_status", born=born
            ),
            is_active=self.is_job_active,
            is_succeeded=self.is_job_succeeded,
            find_job=None
            if self.submission_is_idempotent or not self._overrides("find_job")
            else lambda token: self._cloud(self.find_job, token, context, what="find_job", born=None),
            await_find=None
            if self.submission_is_idempotent or not self._overrides("find_job")
            else lambda token, born: self._find_patiently(token, born, context),
            is_valid_external_id=self.is_valid_external_id,
            read_ledger=(lambda: self._read_ledger(identity, context)) if self.keep_ledger else None,
            distrust_record=lambda value: self._distrust_record(identity, value),
        )
        self._record_identity = identity
        with tracer.start_as_current_span("airflow_resumable.resume_decision") as span:
            span.set_attribute("operator", type(self).__name__)
            span.set_attribute("resumable.external_id_key", self.external_id_key)
            decision = decide(
                self._store_get(store, RECORD_KEY), self._store_get(store, self.external_id_key), backend
            )
            span.set_attribute("resumable.decision", decision.reason)
            span.set_attribute("resumable.generation", decision.record.generation)
            if decision.record.external_id is not None:
                span.set_attribute("resumable.external_id", str(decision.record.external_id))
        degraded = decision.reason in ("spec_changed", "prior_failed") or decision.reason.startswith(
            "ledger_"
        )
        log = self.log.warning if degraded else self.log.info
        log(
            "Resume decision",
            decision=decision.reason,
            action=decision.action,
            generation=decision.record.generation,
            external_id=decision.record.external_id,
            token=decision.record.token,
            detail=decision.detail,
        )
        self._count(f"decision.{decision.reason}")
        return decision

    def _submit(self, record: JobRecord, context: Context) -> JsonValue:
        """Submit with ``record.token``; retried only where a retry cannot create a duplicate."""
        self.submission_token = record.token
        looks_up = not self.submission_is_idempotent and self._overrides("find_job")
        #: When the last attempt that may have created the job was sent (None: none was).
        ambiguous_since: str | None = None

        def attempt() -> JsonValue:
            nonlocal ambiguous_since
            # Only after an attempt that may have created the job: a lost response, never a
            # throttled call (refused, not carried out). An inherited intent was already looked up
            # by the decision. The lookup keeps looking while the job may still be invisible.
            if ambiguous_since is not None and looks_up:
                found = self._find_patiently(record.token, ambiguous_since, context)
                if found is not None:
                    return found
            sent_at = _patience.now_stamp()
            try:
                return self.submit_job(context)
            except BaseException as error:
                if not self.is_throttling_error(error):
                    ambiguous_since = sent_at
                raise

        safe_to_retry = self.submission_is_idempotent or looks_up
        policy = self.cloud_retry if safe_to_retry else RetryPolicy(attempts=1)
        external_id = self._throttle_retrying("submit_job")(
            policy.call, attempt, is_retryable=self._is_retryable, what="submit_job"
        )
        if external_id is None:
            raise JobFailedError(self.service_name, None, "NOT_SUBMITTED", "submit_job returned no id")
        self.log.info(
            "Submitted job", external_id=external_id, generation=record.generation, token=record.token
        )
        return external_id

    def _wait_and_finish(self, external_id: JsonValue, context: Context) -> Any:
        self._final_status = None
        self.poll_until_complete(external_id, context)
        if self._final_status is None:
            # A provider's own poll loop: confirm, since a try must never succeed on a failed job.
            status = self._cloud(self.get_job_status, external_id, context, what="get_job_status")
            if not self.is_job_succeeded(status):
                raise JobFailedError(
                    self.service_name,
                    external_id,
                    status,
                    self.describe_failure(external_id, status, context),
                )
        return self.get_job_result(external_id, context)

    def _persist_submitted(self, store: TaskStateStoreAccessor, record: JobRecord, context: Context) -> None:
        """Record the id; a failure here is survivable because the intent's token finds the job again."""
        self._current_record = record
        stored = self._save_record(store, record, context, required=False)
        if stored and record.external_id is not None:
            # Mirror for the stock operator: swapping the class back still reconnects.
            self._store_set(store, self.external_id_key, record.external_id, required=False)

    # ------------------------------------------------------------------------------ the record
    def _save_record(self, store: Any, record: JobRecord, context: Context | None, *, required: bool) -> bool:
        """
        Write the record to the task state store, and mirror it in the ledger of jobs in flight.

        The ledger holds it while the job may be active (intent, submitted, interrupted) and lets
        go of it once the job completed or was cancelled.
        """
        identity = TaskIdentity.from_context(context) if context is not None else self._record_identity
        value = record.to_json() if identity is None else seal_record(identity, record)
        stored = self._store_set(
            store, RECORD_KEY, value, required=required, retention=record_retention(record.phase)
        )
        if context is not None and self.keep_ledger:
            if record.phase in ("completed", "cancelled"):
                self._forget_in_ledger(context)
            else:
                self._ledger_call(context, "set", record)
        return stored

    def _distrust_record(self, identity: TaskIdentity, value: JsonValue) -> str | None:
        """Why the stored record is not believed (its seal does not verify), or None."""
        verdict = record_verdict(identity, value)
        if verdict is Verdict.NO_KEY:
            if not ResumableJobMixin._warned_no_key:
                ResumableJobMixin._warned_no_key = True
                self.log.warning(
                    "No key to seal or verify records: set [api] secret_key (the same on every "
                    "component); the custodian ignores unsealed ledger entries",
                )
            return None
        return None if verdict.trusted else verdict.value

    def _forget_in_ledger(self, context: Context) -> None:
        """
        Delete this task instance's ledger entry, only if it still names this try's generation.

        The key is per task instance: after a mark failed and a quick clear, a new try may already
        have written its own entry there while this one is still ending; that entry is not ours.
        """
        if not self.keep_ledger:
            return
        mine = self._current_record
        if mine is not None:
            key = ledger_key(TaskIdentity.from_context(context))
            try:
                current = self._ledger(context).get(key)
            except Exception as err:  # unreadable: deleting blindly could drop another try's entry
                self.log.warning("Could not read the ledger entry to delete it", key=key, error=repr(err))
                return
            if isinstance(current, dict) and current.get("token") not in (None, mine.token):
                self.log.info(
                    "Leaving the ledger entry of a newer try of this task instance",
                    key=key,
                    generation=current.get("generation"),
                )
                return
        self._ledger_call(context, "delete", None)

    def _ledger_call(self, context: Context, what: str, record: JobRecord | None) -> None:
        """Write or delete this task instance's ledger entry; a failure only warns."""
        identity = TaskIdentity.from_context(context)
        ledger = self._ledger(context)
        key = ledger_key(identity)
        try:
            if record is not None:
                entry = ledger_entry(
                    identity,
                    record,
                    self._safe_cancel_recipe(context),
                    cancel_on_user_stop=self.cancel_on_user_stop,
                    cancel_on_failure=self.cancel_on_failure,
                    try_id=_try_id(context),
                )
                self.state_store_retry.call(
                    ledger.set, key, entry, is_retryable=is_transient_state_store_error, what="ledger write"
                )
            else:
                self.state_store_retry.call(
                    ledger.delete, key, is_retryable=is_transient_state_store_error, what="ledger delete"
                )
        except Exception as err:
            self.log.warning(
                "Could not update the ledger of jobs in flight; the task state store still has the record",
                key=key,
                action=what,
                error=repr(err),
            )

    def _safe_cancel_recipe(self, context: Context) -> CancelRecipe | None:
        try:
            return self.cancel_recipe(context)
        except Exception as err:  # the ledger entry is still worth writing without it
            self.log.warning("Could not build the cancel recipe for the ledger", error=repr(err))
            return None

    def _read_ledger(self, identity: TaskIdentity, context: Context) -> JobRecord | None:
        """
        The ledger's copy of this task instance's record, or None.

        :raises StateStoreUnavailableError: the ledger cannot be read (nothing is submitted: a
            clear may have deleted the record of a job that still runs).
        """
        key = ledger_key(identity)
        ledger = self._ledger(context)
        try:
            entry = self.state_store_retry.call(
                ledger.get, key, is_retryable=is_transient_state_store_error, what="ledger read"
            )
        except Exception as err:
            raise StateStoreUnavailableError(
                f"The task state store holds no record and the ledger of jobs in flight ({key}) "
                f"could not be read ({err}); nothing was submitted."
            ) from err
        try:
            return record_from_entry(identity, entry)
        except RecordFormatError as err:
            self.log.warning("Ignoring an unreadable ledger entry", key=key, error=str(err))
            return None

    @staticmethod
    def _ledger(context: Context) -> JobLedger:
        ledger = cast("JobLedger | None", context.get(LEDGER_CONTEXT_KEY))  # a test seam
        return ledger if ledger is not None else VariableLedger()

    # ------------------------------------------------------------------------------ plumbing
    def cloud_call(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        """
        ``fn(*args, **kwargs)`` as a cloud call outside the mixin's own hooks (a describe behind a
        link, the results behind ``get_job_result``): transient errors retried by ``cloud_retry``,
        throttling waited out for ``throttle_patience``, and, when ``args[0]`` is the current
        record's job, a :class:`JobNotFoundError` while that job is younger than its
        ``visibility_window`` asked again. The mixin's own calls go through the same path.

        :param what: the call's name in logs and metrics (``"get_statement_result"``).

        .. versionadded:: 0.5.0
        """
        return self._cloud(fn, *args, what=what, **kwargs)

    def _cloud(self, fn: Callable[..., Any], *args: Any, what: str, born: Any = ..., **kwargs: Any) -> Any:
        """
        ``fn(*args, **kwargs)`` as a cloud call: transient errors retried by ``cloud_retry``,
        throttling waited out (``throttle_patience``), and a :class:`JobNotFoundError` for a job
        younger than ``visibility_window`` tried again until the job shows or the window passed.

        :param born: when the job ``args[0]`` names was submitted (a record's ``created_at``);
            ``...``: the current record's, if it names that job; None: unknown (no waiting).
        """
        if born is ...:
            born = self._born_of(args[0] if args else None)
        throttled = self._throttle_retrying(what)
        call = self.cloud_retry.call
        if not _patience.is_young(born, self.visibility_window):
            return throttled(call, fn, *args, is_retryable=self._is_retryable, what=what, **kwargs)
        not_visible = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(JobNotFoundError),
            stop=lambda state: not _patience.is_young(born, self.visibility_window),
            wait=_patience.VISIBILITY_WAIT,
            sleep=self._sleep_between_polls,
            reraise=True,
            before_sleep=lambda state: self._not_visible_yet(what, args[0] if args else None, born),
        )
        return not_visible(throttled, call, fn, *args, is_retryable=self._is_retryable, what=what, **kwargs)

    def _find_patiently(self, token: str, born: str | None, context: Context) -> JsonValue:
        """``find_job(token)``, looking again while a job sent at ``born`` may still be invisible."""
        if not _patience.is_young(born, self.visibility_window):
            return self._cloud(self.find_job, token, context, what="find_job", born=None)
        looking = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda found: found is None),
            stop=lambda state: not _patience.is_young(born, self.visibility_window),
            wait=_patience.VISIBILITY_WAIT,
            sleep=self._sleep_between_polls,
            retry_error_callback=lambda state: None,
            before_sleep=lambda state: self._not_visible_yet("find_job", token, born),
        )
        return looking(self._cloud, self.find_job, token, context, what="find_job", born=None)

    def _throttle_retrying(self, what: str) -> tenacity.Retrying:
        """Retries of throttled calls: backoff with full jitter, for ``throttle_patience`` seconds."""

        def throttled(state: tenacity.RetryCallState) -> None:
            self._count("throttled")
            self.log.info(
                "The service throttled the call; trying again",
                call=what,
                attempt=state.attempt_number,
                error=repr(state.outcome.exception()) if state.outcome else None,
            )

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(self.is_throttling_error),
            stop=tenacity.stop_after_delay(self.throttle_patience),
            wait=_patience.THROTTLE_WAIT,
            sleep=self._sleep_between_polls,
            reraise=True,
            before_sleep=throttled,
        )

    def _is_retryable(self, error: BaseException) -> bool:
        """``cloud_retry``'s part: transient errors but throttling, which has its own patience."""
        return self.is_transient_error(error) and not self.is_throttling_error(error)

    def _born_of(self, external_id: Any) -> str | None:
        """When the current record's job was submitted, if ``external_id`` is that job."""
        record = self._current_record
        if record is None or record.external_id is None or record.external_id != external_id:
            return None
        return record.created_at

    def _not_visible_yet(self, what: str, subject: Any, born: str | None) -> None:
        self._count("visibility_wait")
        self.log.info(
            "Job not visible yet; the service may not list a new job at once, looking again",
            call=what,
            subject=subject,
            submitted_at=born,
            visibility_window=self.visibility_window,
        )

    def _store_get(self, store: TaskStateStoreAccessor, key: str) -> JsonValue:
        return self.state_store_retry.call(
            store.get, key, is_retryable=is_transient_state_store_error, what="state read"
        )

    def _store_set(
        self,
        store: TaskStateStoreAccessor,
        key: str,
        value: JsonValue,
        *,
        required: bool,
        retention: timedelta | None = None,
    ) -> bool:
        """Write one key; ``retention`` as the accessor takes it (None: Airflow's default)."""
        extra = {} if retention is None else {"retention": retention}
        try:
            self.state_store_retry.call(
                store.set,
                key,
                value,
                is_retryable=is_transient_state_store_error,
                what="state write",
                **extra,
            )
        except Exception as err:
            if required:
                raise StateStoreUnavailableError(
                    f"Could not write {key!r} to the task state store ({err}); nothing was submitted."
                ) from err
            self.log.warning(
                "Could not write to the task state store; continuing, the submission token still "
                "identifies the job",
                key=key,
                error=repr(err),
            )
            return False
        return True

    def _overrides(self, name: str) -> bool:
        return getattr(type(self), name) is not getattr(ResumableJobMixin, name)

    def _count(self, metric: str) -> None:
        """Count one event under the package's one metric prefix, tagged with the operator class."""
        Stats.incr(f"{METRIC_PREFIX}.{metric}", tags={"operator": type(self).__name__})


def _try_id(context: Context) -> str | None:
    """The id of the running try (Airflow 3 gives each try its own), or None outside a real try."""
    try_id = getattr(context.get("ti"), "id", None)
    return None if try_id is None else str(try_id)


def _or_setting(value: Any, name: str) -> Any:
    return setting(name) if value is None else value
