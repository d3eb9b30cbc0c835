"""
The ``on_task_instance_checkpointed`` listener hook (named as in AIP-96).

Airflow 3.3 has no CHECKPOINTED state and no such hook, but its listener manager is a pluggy
``PluginManager`` that takes extra hook specifications. This module adds the spec to the task
SDK's listener manager the first time a checkpoint happens, then calls every listener (registered
the usual way, through an Airflow plugin's ``listeners``) that implements it::

    from airflow.listeners import hookimpl   # or pluggy.HookimplMarker("airflow")

    class CheckpointAuditor:
        @hookimpl
        def on_task_instance_checkpointed(self, previous_state, task_instance, checkpoint_data):
            ...

A listener that fails is logged and ignored: a checkpoint must not fail because of one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.types import Logger

__all__ = ["notify_checkpointed", "on_task_instance_checkpointed"]

hookspec = pluggy.HookspecMarker("airflow")


@hookspec
def on_task_instance_checkpointed(
    previous_state: str, task_instance: Any, checkpoint_data: dict[str, Any]
) -> None:
    """
    A running try ended in a checkpoint: its remote job keeps running and the task will resume.

    :param previous_state: the task instance's state before the checkpoint (``running``).
    :param task_instance: the runtime task instance.
    :param checkpoint_data: external id, generation, resumes, signal, reason, resume time.
    """


def notify_checkpointed(context: Context, checkpoint: dict[str, Any], *, log: Logger) -> None:
    """Call the listeners of ``on_task_instance_checkpointed``; never raises."""
    try:
        from airflow.sdk.listener import get_listener_manager

        manager = get_listener_manager()
        if not manager.pm.hook.__dict__.get("on_task_instance_checkpointed"):
            manager.add_hookspecs(sys.modules[__name__])
        manager.pm.hook.on_task_instance_checkpointed(
            previous_state="running", task_instance=context.get("ti"), checkpoint_data=checkpoint
        )
    except Exception:
        log.exception("A listener of on_task_instance_checkpointed failed; the checkpoint goes on")
