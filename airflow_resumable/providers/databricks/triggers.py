"""
The trigger of the resumable Databricks operators in ``deferrable=True`` mode.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

from airflow_resumable.triggers import ResumableTriggerMixin

__all__ = ["ResumableDatabricksExecutionTrigger"]


class ResumableDatabricksExecutionTrigger(ResumableTriggerMixin, DatabricksExecutionTrigger):
    """
    The stock run trigger, whose ``on_kill`` cancels the run only when the task no longer wants it.

    **Purpose:** the stock trigger cancels its run on every user action. After a *clear* that is a
    race: the next try reconnects to the run, then the old trigger's ``on_kill`` cancels that same
    run, the try fails on ``TERMINATED:CANCELED`` and a retry submits fresh (with ``retries=0`` the
    clear fails the task).

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`: finished or
    gone → the stock ``on_kill`` cancels the run; cleared or already running again → the run is
    left to the next try.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        run is cancelled (None: no ledger).
    """
