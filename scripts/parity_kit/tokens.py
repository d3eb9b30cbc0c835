"""
The payload compared without our token (the ``ours-tokenless`` run).

Our operators put the submission token (``ar-`` and 40 hex characters) into what they submit: as
``clientToken`` / ``idempotency_token`` / a Glue argument (the exact token), as a tag (Batch,
SageMaker), or as a key of it in a name (``<name>-<12 hex>``: SageMaker, Step Functions; a
`` [ar:<12 hex>:<i>/<n>]`` step-name marker: EMR steps). The upstream tests assert the stock
payload (``submit_job.assert_called_once_with(...)``) and stop there, before their checks of
XComs, links, cancel and polling.

In this run every token our operator submits with is remembered (the mixin's ``_submit``), and
every call a ``Mock`` receives is recorded with those tokens taken out: an exact token value is
dropped with its key (or its list element, such as ``{"Key": ..., "Value": token}``), and a name
loses the key suffix. Nothing else changes: a user's own ``idempotency_token``, combined with ours,
is not our token and stays, so that difference still shows. Harness only; production code is
untouched.
"""

from __future__ import annotations

import re
from typing import Any
from unittest import mock

__all__ = ["install", "strip"]

#: The tokens our operators submitted with in the current test.
_tokens: set[str] = set()
_DROP = object()


def strip(value: Any, tokens: set[str]) -> Any:
    """``value`` without ``tokens`` (see the module docstring); ``_DROP`` for a bare token."""
    if not tokens:
        return value
    if isinstance(value, str):
        if value in tokens:
            return _DROP
        for token in tokens:
            key = token.removeprefix("ar-")[:12]
            value = re.sub(rf"(?:-{key}| \[ar:{key}:\d+/\d+\])$", "", value)
        return value
    if isinstance(value, dict):
        stripped = {k: strip(v, tokens) for k, v in value.items()}
        return {k: v for k, v in stripped.items() if v is not _DROP}
    if isinstance(value, (list, tuple)):
        items = [strip(v, tokens) for v in value if not _is_token_pair(v, tokens)]
        kept = [v for v in items if v is not _DROP]
        return type(value)(kept) if isinstance(value, tuple) else kept
    return value


def _is_token_pair(value: Any, tokens: set[str]) -> bool:
    """A tag such as ``{"Key": "airflow-resumable-token", "Value": token}``."""
    return isinstance(value, dict) and any(isinstance(v, str) and v in tokens for v in value.values())


def install() -> None:
    """Remember submitted tokens; strip them from every call a Mock records."""
    from airflow_resumable.mixin import ResumableJobMixin

    original_submit = ResumableJobMixin._submit

    def submit(self: Any, record: Any, context: Any) -> Any:
        if getattr(record, "token", None):
            _tokens.add(str(record.token))
        return original_submit(self, record, context)

    ResumableJobMixin._submit = submit  # type: ignore[method-assign]
    original_call = mock.CallableMixin.__call__

    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        if _tokens:
            args = tuple(a for a in (strip(a, _tokens) for a in args) if a is not _DROP)
            kwargs = {k: v for k, v in ((k, strip(v, _tokens)) for k, v in kwargs.items()) if v is not _DROP}
        return original_call(self, *args, **kwargs)

    mock.CallableMixin.__call__ = call  # type: ignore[method-assign,assignment]


def reset() -> None:
    """Forget the tokens (before each test)."""
    _tokens.clear()
