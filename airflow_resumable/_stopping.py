"""
What a try does when it must stop before its job ends: checkpoint, cancel, or fail for good.

A private base of :class:`~airflow_resumable.mixin.ResumableJobMixin`; kept apart so the engine
(decide, submit, wait) and the stop paths each stay readable. Nothing here talks to the
supervisor from a signal handler: ``on_kill`` only records, the main thread acts.
"""

from __future__ import annotations

import signal
import warnings
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

from airflow_resumable.exceptions import HandedOverError, ResumeLimitError, StoppedByUserError
from airflow_resumable.interruption import InterruptionWatch, StopKind, classify_stop
from airflow_resumable.record import cancel_failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk.definitions.context import Context
    from airflow.sdk.types import Logger
    from pydantic import JsonValue

    from airflow_resumable.record import JobRecord
    from airflow_resumable.retry import RetryPolicy

#: Below this, a rescheduled try can overtake the scheduler's handling of the previous workload.
MIN_SAFE_RESUME_DELAY = timedelta(seconds=5)


class Interrupted(Exception):  # a control-flow signal, not an error
    """Raised inside the engine at a safe point once a stop signal was recorded."""


class StopHandlingMixin:
    """Checkpoint on a worker's shutdown, cancel on a user's stop, a timeout or a final failure."""

    if TYPE_CHECKING:
        log: Logger
        cloud_retry: RetryPolicy
        external_id_key: str
        _current_record: JobRecord | None
        _final_status: str | None

        def cancel_job(self, external_id: JsonValue, context: Context) -> None: ...
        def get_job_status(self, external_id: JsonValue, context: Context) -> Any: ...
        def is_job_active(self, status: Any) -> bool: ...
        def is_transient_error(self, error: BaseException) -> bool: ...
        def _store_set(self, store: Any, key: str, value: JsonValue, *, required: bool) -> bool: ...
        def _save_record(
            self, store: Any, record: JobRecord, context: Context | None, *, required: bool
        ) -> bool: ...
        def _count(self, metric: str) -> None: ...

    def _init_stop_policy(
        self,
        *,
        resume_delay: timedelta | float,
        max_resumes: int,
        cancel_on_user_stop: bool,
        cancel_on_timeout: bool,
        cancel_on_failure: bool,
        on_checkpoint_callback: Callable[..., Any] | list[Callable[..., Any]] | None,
        stop_classification_timeout: float,
    ) -> None:
        if max_resumes < 0:
            raise ValueError(f"max_resumes must be >= 0, got {max_resumes}")
        self.resume_delay = (
            resume_delay if isinstance(resume_delay, timedelta) else timedelta(seconds=resume_delay)
        )
        if self.resume_delay < timedelta(0):
            raise ValueError(f"resume_delay must not be negative, got {resume_delay!r}")
        if timedelta(0) < self.resume_delay < MIN_SAFE_RESUME_DELAY:
            # Airflow 3.3's scheduler can see the finished workload's executor event after the
            # rescheduled one (same try number) was queued, and then fails the new one as "killed
            # externally". A few scheduler loops of delay keep the two apart.
            warnings.warn(
                f"resume_delay={self.resume_delay.total_seconds():g}s is shorter than "
                f"{MIN_SAFE_RESUME_DELAY.total_seconds():g}s: a resumed try can race Airflow's scheduler "
                "and be failed as killed externally.",
                UserWarning,
                stacklevel=3,
            )
        self.max_resumes = max_resumes
        self.cancel_on_user_stop = cancel_on_user_stop
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_failure = cancel_on_failure
        self.on_checkpoint_callback = on_checkpoint_callback
        self.stop_classification_timeout = stop_classification_timeout

    # ------------------------------------------------------------------ signal side (no I/O)
    def on_kill(self) -> None:
        """
        Record the stop; do not cancel here.

        Airflow calls this from its SIGTERM handler (and after an execution timeout). Cancelling
        from a signal handler would destroy the job on every deploy; the poll loop wakes up and
        decides instead (checkpoint for a worker shutdown, cancel for a user's stop).
        """
        watch: InterruptionWatch | None = self.__dict__.get("_active_watch")
        if watch is not None:
            watch.notify(signal.SIGTERM)
        else:
            self.__dict__["_early_signal"] = signal.SIGTERM

    def _start_watch(self) -> InterruptionWatch:
        watch = InterruptionWatch()
        early = self.__dict__.pop("_early_signal", None)
        if early is not None:
            watch.notify(early)
        self.__dict__["_active_watch"] = watch
        return watch

    def _stop_watch(self) -> None:
        self.__dict__.pop("_active_watch", None)

    def _raise_if_interrupted(self) -> None:
        watch: InterruptionWatch | None = self.__dict__.get("_active_watch")
        if watch is not None and watch.is_set:
            raise Interrupted

    def _sleep_between_polls(self, seconds: float) -> None:
        """Wait between status calls, waking at once when a stop signal arrives."""
        watch: InterruptionWatch | None = self.__dict__.get("_active_watch")
        if watch is None:
            import time

            time.sleep(seconds)
        elif watch.wait(seconds):
            raise Interrupted

    # ------------------------------------------------------------------ main-thread side
    def _handle_interruption(self, context: Context, store: Any) -> None:
        """Classify the stop, then checkpoint or cancel. Always raises."""
        watch: InterruptionWatch = self.__dict__["_active_watch"]
        interruption = watch.interruption
        ti = context["ti"]
        kind, why = classify_stop(
            lambda: ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id]),
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=_map_index(ti),
            timeout=self.stop_classification_timeout,
        )
        signal_name = interruption.signal_name if interruption else "SIGTERM"
        self.log.info("Stop signal classified", signal=signal_name, kind=kind.value, reason=why)
        if kind is StopKind.HAND_OVER:
            self._hand_over(signal_name, why)
        if kind is StopKind.USER_STOP:
            self._stop_remote_job(
                context, store, reason=f"user stop: {why}", enabled=self.cancel_on_user_stop
            )
            raise StoppedByUserError(f"{signal_name} received and {why}: the task was stopped from outside.")

        record = self._current_record
        if kind is StopKind.UNKNOWN and record is not None and record.external_id is not None:
            # Usually a worker shutdown under a slow server, and the next try reconnects. But if a
            # user stopped the try, the server refuses the reschedule and nobody polls the job
            # again: name the job, so that it can be found and stopped.
            self.log.warning(
                "Stop signal not classified in time; checkpointing. If a user stopped this task, "
                "the remote job may keep running and must be stopped by hand",
                external_id=record.external_id,
                reason=why,
            )
            self._count("unclassified_stop")
        if record is not None and record.resumes >= self.max_resumes:
            self._stop_remote_job(
                context,
                store,
                reason=f"resume limit {self.max_resumes} reached",
                enabled=self.cancel_on_failure,
            )
            raise ResumeLimitError(
                f"{signal_name} received after {record.resumes} consecutive checkpoints "
                f"(max_resumes={self.max_resumes}); failing instead of checkpointing again."
            )
        self._checkpoint(context, store, signal_name, why, kind=kind.value)

    def _hand_over(self, signal_name: str, why: str) -> None:
        """
        A clear reached this running try: leave the job to the next try, which reconnects.

        Nothing is written: the record already names the job (or its intent's token), and the clear
        may have discarded the task's state (apache/airflow#72100), which the library's ledger of
        jobs in flight survives. Always raises.
        """
        record = self._current_record
        external_id = None if record is None else record.external_id
        self.log.info(
            "Cleared while running: the remote job is left to the next try, which reconnects to it",
            external_id=external_id,
            reason=why,
        )
        self._count("hand_over")
        raise HandedOverError(
            f"{signal_name} received and {why}: the task instance was cleared. The remote job "
            f"{external_id!r} keeps running; the next try reconnects to it."
        )

    def _checkpoint(
        self, context: Context, store: Any, signal_name: str, why: str, *, kind: str = "worker_shutdown"
    ) -> None:
        ti = context["ti"]
        now = datetime.now(tz=timezone.utc)
        data: dict[str, JsonValue] = {
            "at": now.isoformat(timespec="milliseconds"),
            "try_number": int(getattr(ti, "try_number", 0) or 0),
            "signal": signal_name,
            "reason": why,
            # ``unknown``: the server did not say in time; the "Resumable jobs" page flags it.
            "kind": kind,
        }
        record = self._current_record
        if record is not None:
            phase = "interrupted" if record.external_id is not None else record.phase
            record = record.evolve(phase=phase, resumes=record.resumes + 1, interruption=data)
            self._current_record = record
            if store is not None:
                self._save_record(store, record, context, required=False)
        checkpoint = {
            **data,
            "external_id": None if record is None else record.external_id,
            "generation": None if record is None else record.generation,
            "resumes": 0 if record is None else record.resumes,
            "resume_at": (now + self.resume_delay).isoformat(timespec="seconds"),
            "task_reschedule_count": context.get("task_reschedule_count"),
        }
        self.log.info("Checkpoint: worker shutdown, the remote job keeps running", **checkpoint)
        self._count("checkpoint")
        self._emit_checkpoint_events(context, checkpoint)
        raise AirflowRescheduleException(now + self.resume_delay)

    def _emit_checkpoint_events(self, context: Context, checkpoint: dict[str, Any]) -> None:
        callbacks = self.on_checkpoint_callback
        for callback in callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []:
            try:
                callback({**context, "checkpoint": checkpoint})
            except Exception:
                self.log.exception("on_checkpoint_callback failed; the checkpoint goes on")
        from airflow_resumable.listener import notify_checkpointed

        notify_checkpointed(context, checkpoint, log=self.log)

    def _stop_remote_job(self, context: Context, store: Any, *, reason: str, enabled: bool) -> bool:
        """Cancel the current job if there is one and ``enabled``; say loudly when it cannot."""
        record = self._current_record
        external_id = None if record is None else record.external_id
        if external_id is None:
            self.log.info("No remote job to cancel", reason=reason)
            return False
        if self._final_status is not None:
            return False  # the job already ended; nothing is left running
        if not enabled:
            self.log.warning(
                "Not cancelling the remote job (switched off); it may keep running",
                external_id=external_id,
                reason=reason,
            )
            return False
        try:
            self.cloud_retry.call(
                self.cancel_job, external_id, context, is_retryable=self.is_transient_error, what="cancel_job"
            )
        except Exception as err:
            if self._already_ended(external_id, context):
                # Someone else was quicker (the custodian, on the same user's stop): not an error.
                self.log.info("The remote job had already ended; nothing to cancel", external_id=external_id)
                self._current_record = record.evolve(phase="cancelled")  # type: ignore[union-attr]
                if store is not None:
                    self._save_record(store, self._current_record, context, required=False)
                return True
            self.log.error(
                "COULD NOT CANCEL the remote job: it may be left running and must be stopped by hand",
                external_id=external_id,
                reason=reason,
                error=repr(err),
            )
            self._count("cancel_failed")
            assert record is not None
            self._current_record = record.evolve(cancel_failed=cancel_failure(external_id, reason, err))
            if store is not None:
                self._save_record(store, self._current_record, context, required=False)
            return False
        assert record is not None
        self._current_record = record.evolve(phase="cancelled", cancel_failed=None)
        if store is not None:
            self._save_record(store, self._current_record, context, required=False)
        self.log.warning("Cancelled the remote job", external_id=external_id, reason=reason)
        self._count("cancel")
        return True

    def _already_ended(self, external_id: JsonValue, context: Context) -> bool:
        """True if the service says the job is no longer active (a failed cancel was not needed)."""
        try:
            return not self.is_job_active(self.get_job_status(external_id, context))
        except Exception:
            return False

    def _fails_for_good(self, context: Context, error: BaseException) -> bool:
        if isinstance(error, AirflowFailException):
            return True
        ti = context.get("ti")
        try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
        return isinstance(try_number, int) and isinstance(max_tries, int) and try_number > max_tries


def _map_index(ti: Any) -> int:
    """The task instance's map index; -1 when unmapped (0 is a real index, not "unset")."""
    value = getattr(ti, "map_index", None)
    return -1 if value is None else int(value)
