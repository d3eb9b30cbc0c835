"""Shared set-up: a throw-away, migrated Airflow home for the whole session, before airflow loads."""

from __future__ import annotations

from airflow_resumable.testing.airflow_env import use_temporary_airflow_home

use_temporary_airflow_home()

from airflow_resumable.custodian import register_canceller  # noqa: E402 - after the Airflow home

#: The toy service's canceller exists only in tests (its jobs live in this process's memory).
register_canceller("toy_job", "airflow_resumable.testing.toy:cancel_toy_job_by_recipe")
