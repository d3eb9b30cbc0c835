"""
The trigger of the resumable Databricks operators in ``deferrable=True`` mode.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

from airflow_resumable.interruption import StopKind, classify_trigger_kill
from airflow_resumable.ledger import VariableLedger

__all__ = ["ResumableDatabricksExecutionTrigger"]


class ResumableDatabricksExecutionTrigger(DatabricksExecutionTrigger):
    """
    The stock run trigger, whose ``on_kill`` cancels the run only when the task no longer wants it.

    **Purpose:** the stock trigger cancels its run on every user action. After a *clear* that is a
    race: the next try reconnects to the run, then the old trigger's ``on_kill`` cancels that same
    run, the try fails on ``TERMINATED:CANCELED`` and a retry submits fresh (with ``retries=0`` the
    clear fails the task).

    **How it works:** ``on_kill`` asks the API server for the task instance's state
    (:func:`~airflow_resumable.interruption.classify_trigger_kill`, the rule of
    :mod:`airflow_resumable._custody`): finished or gone (marked failed or success, DAG run failed or
    deleted) → cancel, as the stock trigger does, unless ``cancel_on_user_stop`` is off; cleared or
    already running again → leave the run to the next try. No answer within
    ``stop_classification_timeout`` → cancel (the stock behaviour; a clear then costs one retry).

    A triggerer's own shutdown or restart never calls ``on_kill``: the trigger resumes elsewhere.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        run is cancelled (None: no ledger).
    """

    def __init__(
        self,
        *args: Any,
        cancel_on_user_stop: bool = True,
        stop_classification_timeout: float = 3.0,
        ledger_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cancel_on_user_stop = cancel_on_user_stop
        self.stop_classification_timeout = stop_classification_timeout
        self.ledger_key = ledger_key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The stock arguments plus ours, under this class's path."""
        _, kwargs = super().serialize()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **kwargs,
                "cancel_on_user_stop": self.cancel_on_user_stop,
                "stop_classification_timeout": self.stop_classification_timeout,
                "ledger_key": self.ledger_key,
            },
        )

    async def on_kill(self) -> None:
        """Cancel the run after a user's stop; leave it to the next try after a clear."""
        kind, why = await classify_trigger_kill(self.task_instance, timeout=self.stop_classification_timeout)
        if kind is StopKind.HAND_OVER:
            self.log.info("Cancelled by a clear (%s): run %s is left to the next try.", why, self.run_id)
            return
        if kind is StopKind.UNKNOWN:
            self.log.warning("Could not tell a clear from a stop (%s); cancelling run %s.", why, self.run_id)
        if not self.cancel_on_user_stop:
            self.log.warning("Not cancelling run %s (cancel_on_user_stop is off): %s.", self.run_id, why)
            return
        await super().on_kill()
        if self.ledger_key is not None:
            try:
                await asyncio.to_thread(VariableLedger().delete, self.ledger_key)
            except Exception as err:  # the entry names an ended run; a next try overwrites it
                self.log.warning("Could not delete ledger entry %s: %r", self.ledger_key, err)
