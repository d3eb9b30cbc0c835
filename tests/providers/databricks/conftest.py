"""Fixtures for the Databricks operators: an in-process fake Jobs API that the real hook talks to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_resumable.testing.databricks import FakeDatabricks, databricks_connection_env

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDatabricks]:
    """An in-process fake in manual mode, ``databricks_default`` pointing at it."""
    with FakeDatabricks() as server:
        for key, value in databricks_connection_env(server.url).items():
            monkeypatch.setenv(key, value)
        yield server
