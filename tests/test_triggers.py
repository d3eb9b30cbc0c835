"""The shared trigger mixin: how long on_kill waits for the server before it must guess."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_resumable.triggers import MIN_TRIGGER_CLASSIFICATION_TIMEOUT, ResumableTriggerMixin

if TYPE_CHECKING:
    import pytest


def trigger(stop_classification_timeout: float) -> ResumableTriggerMixin:
    made = ResumableTriggerMixin()
    made.init_resumable(
        cancel_on_user_stop=True, stop_classification_timeout=stop_classification_timeout, ledger_key=None
    )
    return made


def test_a_trigger_waits_longer_than_a_task() -> None:
    """The task's 3 s bound becomes 20 s: a triggerer's first request can take 5 s to be served."""
    assert trigger(3.0)._classification_timeout() == MIN_TRIGGER_CLASSIFICATION_TIMEOUT == 20.0


def test_a_longer_operator_setting_is_kept() -> None:
    """An operator that allows more keeps it, within the triggerer's on_kill bound."""
    assert trigger(25.0)._classification_timeout() == 25.0


def test_the_triggerers_on_kill_timeout_bounds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """on_kill must answer before the triggerer gives up on it ([triggerer] on_kill_timeout)."""
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "12")
    assert trigger(3.0)._classification_timeout() == 10.0
