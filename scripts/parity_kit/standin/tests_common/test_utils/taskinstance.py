"""``tests_common.test_utils.taskinstance``: task instances live in the metadata database; skipped."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

from tests_common import needs

__all__ = ["create_task_instance", "get_template_context", "render_template_fields"]


def create_task_instance(*args: Any, **kwargs: Any) -> NoReturn:
    """Upstream creates a database-backed task instance; the stand-in has no database."""
    pytest.skip(needs("create_task_instance (the metadata database)"))


def render_template_fields(*args: Any, **kwargs: Any) -> NoReturn:
    """Upstream renders through a database-backed task instance."""
    pytest.skip(needs("render_template_fields (the metadata database)"))


def get_template_context(*args: Any, **kwargs: Any) -> NoReturn:
    """Upstream builds the context of a database-backed task instance."""
    pytest.skip(needs("get_template_context (the metadata database)"))
