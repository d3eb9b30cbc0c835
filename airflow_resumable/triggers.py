"""
What every resumable trigger shares: an ``on_kill`` that tells a clear from a user's stop.

A trigger is the job's watcher while its task is deferred (``airflow_resumable._custody``). Airflow
3.3's triggerer calls ``on_kill`` after any user action on the task instance and never on its own
shutdown; the stock triggers then cancel the job, which after a *clear* cancels the very job the
next try reconnects to. :class:`ResumableTriggerMixin` asks the server first.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_resumable.interruption import StopKind, classify_trigger_kill
from airflow_resumable.ledger import VariableLedger

__all__ = ["MIN_TRIGGER_CLASSIFICATION_TIMEOUT", "ResumableTriggerMixin"]

#: Seconds ``on_kill`` waits at least for the server's answer (see ``_classification_timeout``).
MIN_TRIGGER_CLASSIFICATION_TIMEOUT = 20.0


class ResumableTriggerMixin:
    """
    Put before a provider's trigger class; implement :meth:`cancel_job` (or keep the stock ``on_kill``).

    **How it works:** ``on_kill`` asks the API server for the task instance's state
    (:func:`~airflow_resumable.interruption.classify_trigger_kill`): finished or gone (marked
    failed or success, DAG run failed or deleted) → :meth:`cancel_job`, unless
    ``cancel_on_user_stop`` is off, then the ledger entry is deleted; cleared, queued or already
    running again → nothing (the next try reconnects). No answer within 20 s (or
    ``stop_classification_timeout`` if longer; at most ``[triggerer] on_kill_timeout`` - 2 s) →
    cancel, the stock behaviour (a clear then costs a fresh job).

    ``__init__`` takes the three arguments below and passes the rest to the provider's trigger;
    ``serialize()`` returns this class's path with both.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).
    """

    if TYPE_CHECKING:
        task_instance: Any
        log: Any  # the trigger's logger (LoggingMixin)

    cancel_on_user_stop: bool = True
    stop_classification_timeout: float = 3.0
    ledger_key: str | None = None

    def __init__(
        self,
        *args: Any,
        cancel_on_user_stop: bool = True,
        stop_classification_timeout: float = 3.0,
        ledger_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Take the resumable arguments; pass every other one to the provider's trigger."""
        super().__init__(*args, **kwargs)
        self.init_resumable(
            cancel_on_user_stop=cancel_on_user_stop,
            stop_classification_timeout=stop_classification_timeout,
            ledger_key=ledger_key,
        )

    def init_resumable(
        self, *, cancel_on_user_stop: bool, stop_classification_timeout: float, ledger_key: str | None
    ) -> None:
        """Keep the resumable arguments."""
        self.cancel_on_user_stop = cancel_on_user_stop
        self.stop_classification_timeout = stop_classification_timeout
        self.ledger_key = ledger_key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The provider trigger's arguments plus ours, under this class's import path."""
        _, kwargs = super().serialize()  # type: ignore[misc]  # the provider trigger, next in the MRO
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, **self.resumable_kwargs()}

    def resumable_kwargs(self) -> dict[str, Any]:
        """The resumable arguments, for ``serialize()``."""
        return {
            "cancel_on_user_stop": self.cancel_on_user_stop,
            "stop_classification_timeout": self.stop_classification_timeout,
            "ledger_key": self.ledger_key,
        }

    async def cancel_job(self) -> None:
        """Cancel the watched job. The default runs the stock trigger's own ``on_kill``."""
        await super().on_kill()  # type: ignore[misc]  # the provider trigger's on_kill, next in the MRO

    def _classification_timeout(self) -> float:
        """
        How long ``on_kill`` waits for the server: at least :data:`MIN_TRIGGER_CLASSIFICATION_TIMEOUT`.

        Unlike a task, which its supervisor kills 5 s after a user's stop, a trigger's ``on_kill``
        may take up to ``[triggerer] on_kill_timeout`` (30 s); and the triggerer builds its
        in-process execution API on the first request any trigger sends, which took 4.5-5 s on a
        2-core machine (measured). A 3 s bound then cancelled the job of every cleared task.
        """
        from airflow.sdk.configuration import conf

        ceiling = conf.getfloat("triggerer", "on_kill_timeout", fallback=30.0) - 2.0
        wanted = max(self.stop_classification_timeout, MIN_TRIGGER_CLASSIFICATION_TIMEOUT)
        return max(min(wanted, ceiling), self.stop_classification_timeout)

    async def on_kill(self) -> None:
        """Cancel the job after a user's stop; leave it to the next try after a clear."""
        kind, why = await classify_trigger_kill(self.task_instance, timeout=self._classification_timeout())
        if kind is StopKind.HAND_OVER:
            self.log.info("Cancelled by a clear (%s): the job is left to the next try.", why)
            return
        if kind is StopKind.UNKNOWN:
            self.log.warning("Could not tell a clear from a stop (%s); cancelling the job.", why)
        if not self.cancel_on_user_stop:
            self.log.warning("Not cancelling the job (cancel_on_user_stop is off): %s.", why)
            return
        await self.cancel_job()
        if self.ledger_key is not None:
            try:
                await asyncio.to_thread(VariableLedger().delete, self.ledger_key)
            except Exception as err:  # the entry names an ended job; a next try overwrites it
                self.log.warning("Could not delete ledger entry %s: %r", self.ledger_key, err)
