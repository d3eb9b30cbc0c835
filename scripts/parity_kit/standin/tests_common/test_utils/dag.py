"""``tests_common.test_utils.dag``: syncing a DAG needs the metadata database; the test is skipped."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

from tests_common import needs

__all__ = ["sync_dag_to_db"]


def sync_dag_to_db(*args: Any, **kwargs: Any) -> NoReturn:
    """Upstream writes the DAG to the metadata database; the stand-in has none."""
    pytest.skip(needs("sync_dag_to_db (the metadata database)"))
