"""
What the harness changes around the operators, and nothing else: no test body, no production code.

In every run, :func:`block_network`: the tests run offline. A call that escapes the test's mocks
fails at once with :class:`NetworkBlocked`, which neither botocore, requests nor our operators
count as transient, so nothing retries or sleeps on it.

In the runs with our operators (``ours`` and ``ours-tokenless``), two environment adapters, each
named in the report:

- :func:`context_without_store`: an upstream test that passes ``None`` or a ``Mock`` as the
  context never meant it to hold a task state store (tests that give one pass a dict with
  ``task_state_store``). The stock operators never read that key; ours would read a Mock's
  auto-created child as a store full of Mocks. So ours sees such a context as one without
  ``task_state_store`` (an empty mapping for ``None``), compared equal to what the test passed.
- :func:`submit_through_hook_client`: ours sends its submission through a copy of the hook's client
  with botocore's retries off (:func:`airflow_resumable.providers.amazon.common.no_retry_client`);
  the tests mock the hook's own client, as the stock operator uses it. Here that copy is the hook's
  ``client`` (Batch) or ``conn``, so the mocked client sees the call.
- :func:`no_waits`: the tests stub the stock operators' sleeps, not ours. Ours waits between polls
  and retries return at once; after ``WAIT_LIMIT`` waits in one test, :class:`WaitLimit` is
  raised (the test's mocks never end the job), so no test sleeps or hangs. With it, the runs set
  ``[resumable] visibility_window_seconds`` to 0 (environment, :mod:`.main`): a mock answers at
  once, it is not eventually consistent.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest import mock

import tenacity

__all__ = [
    "WAIT_LIMIT",
    "WaitLimit",
    "block_network",
    "context_without_store",
    "no_waits",
    "submit_through_hook_client",
]

#: Waits of ours in one test before :class:`WaitLimit` (a poll loop the test's mocks never end).
WAIT_LIMIT = 100

#: Modules that imported ``no_retry_client`` by name (the adapter replaces each binding).
_NO_RETRY_CLIENT_USERS = (
    "airflow_resumable.providers.amazon.common",
    "airflow_resumable.providers.amazon.batch",
    "airflow_resumable.providers.amazon.glue",
    "airflow_resumable.providers.amazon.sagemaker",
    "airflow_resumable.providers.amazon._emr_steps",
)
_STORE = "task_state_store"


class WaitLimit(Exception):
    """Ours waited ``WAIT_LIMIT`` times in one test: the test's mocks never end the job."""


class NetworkBlocked(Exception):
    """A test reached for the network; ``make parity`` runs offline."""


def block_network() -> None:
    """Refuse every HTTP request (botocore, requests) and every non-loopback connection."""
    import botocore.httpsession
    import requests.adapters

    def refuse(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise NetworkBlocked(f"make parity runs offline: {getattr(request, 'url', request)!r} not sent")

    botocore.httpsession.URLLib3Session.send = refuse
    requests.adapters.HTTPAdapter.send = refuse  # type: ignore[method-assign]
    original_connect = socket.socket.connect
    original_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            raise ConnectionRefusedError(f"make parity runs offline: connect to {address!r} refused")
        original_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            raise socket.gaierror(f"make parity runs offline: no lookup of {host!r}")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo


def _is_local(host: Any) -> bool:
    if host is None or isinstance(host, bytes) or not isinstance(host, str):
        return host is None
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.startswith("/")  # a unix socket path


class _StorelessContext(Mapping[str, Any]):
    """A ``None`` or ``Mock`` context as ours sees it: the same, minus ``task_state_store``."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def __getitem__(self, key: str) -> Any:
        if self._original is None or key == _STORE:
            raise KeyError(key)
        return self._original[key]

    def get(self, key: str, default: Any = None) -> Any:
        if self._original is None or key == _STORE:
            return default
        return self._original.get(key, default)

    def __contains__(self, key: object) -> bool:
        return self._original is not None and key != _STORE and key in self._original

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def __eq__(self, other: object) -> bool:
        return other is self._original or other is self

    def __hash__(self) -> int:
        return id(self._original)

    def __bool__(self) -> bool:
        return bool(self._original)


def context_without_store(cls: type) -> None:
    """Wrap ``execute`` and ``execute_complete`` of ``cls`` so a None/Mock context has no store."""
    for name in ("execute", "execute_complete"):
        original = getattr(cls, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def wrapper(
            self: Any, context: Any = None, *args: Any, __original: Any = original, **kwargs: Any
        ) -> Any:
            if context is None or isinstance(context, mock.NonCallableMock):
                context = _StorelessContext(context)
            return __original(self, context, *args, **kwargs)

        setattr(cls, name, wrapper)


def submit_through_hook_client() -> None:
    """``no_retry_client(hook)`` returns the hook's own client: the one the tests mock."""

    def hook_client(hook: Any) -> Any:
        # BatchClientHook's operator calls ``hook.client`` (the same ``conn``); the others ``conn``.
        return hook.client if "client" in dir(type(hook)) else hook.conn

    for name in _NO_RETRY_CLIENT_USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "no_retry_client"):
            setattr(module, "no_retry_client", hook_client)  # noqa: B010 - not every module has it


def no_waits() -> Callable[[], None]:
    """
    Ours never sleeps: ``_sleep_between_polls`` counts instead, and ``cloud_retry`` and
    ``state_store_retry`` wait nothing between attempts (their attempts are unchanged).

    :return: resets the per-test count of waits (call it before each test).
    """
    from airflow_resumable.mixin import ResumableJobMixin
    from airflow_resumable.retry import RetryPolicy

    waits = [0]

    def sleep_between_polls(self: Any, seconds: float) -> None:
        self._raise_if_interrupted()
        waits[0] += 1
        if waits[0] > WAIT_LIMIT:
            raise WaitLimit(
                f"{type(self).__name__} waited {WAIT_LIMIT} times; the test's mocks never end the job"
            )

    original_call = RetryPolicy.call

    def call(self: RetryPolicy, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return original_call(dataclasses.replace(self, wait=tenacity.wait_none()), fn, *args, **kwargs)

    ResumableJobMixin._sleep_between_polls = sleep_between_polls  # type: ignore[method-assign]
    RetryPolicy.call = call  # type: ignore[method-assign]

    def reset() -> None:
        waits[0] = 0

    return reset
