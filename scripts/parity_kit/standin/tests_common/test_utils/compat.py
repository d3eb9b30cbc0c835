"""``tests_common.test_utils.compat``: the Task SDK's ``timezone`` (Airflow 3)."""

from __future__ import annotations

from airflow.sdk import timezone

__all__ = ["timezone"]
