"""Shared set-up: a throw-away, migrated Airflow home for the whole session, before airflow loads."""

from __future__ import annotations

from airflow_resumable.testing.airflow_env import use_temporary_airflow_home

use_temporary_airflow_home()
