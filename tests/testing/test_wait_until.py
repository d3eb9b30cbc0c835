"""wait_until: the bounded wait every system test uses instead of a sleep."""

from __future__ import annotations

import pytest

from airflow_resumable.testing.cluster import wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, [], 0, "ready"])
    assert wait_until(lambda: next(answers), timeout=5, what="ready", step=0) == "ready"


def test_gives_up_after_the_timeout_naming_the_event() -> None:
    with pytest.raises(TimeoutError, match="waiting for the job to start"):
        wait_until(lambda: None, timeout=0.05, what="the job to start", step=0.01)


def test_check_aborts_the_wait_with_its_own_error() -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the scheduler died")

    with pytest.raises(RuntimeError, match="scheduler died"):
        wait_until(lambda: False, timeout=5, what="never", step=0, check=check)
    assert len(calls) == 3
