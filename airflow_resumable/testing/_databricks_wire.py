"""
The wire side of :mod:`airflow_resumable.testing.databricks`: what a Jobs API error, a ledger entry,
an endpoint name and a request parameter look like.

Private: import the public names from :mod:`airflow_resumable.testing.databricks`. Nothing here
holds state; :mod:`._databricks_state` decides, this module only shapes what goes over the wire.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ERROR_CODES",
    "MAX_TOKEN_LENGTH",
    "RESULT_STATES",
    "TERMINAL_STATES",
    "ApiReply",
    "FakeDatabricksError",
    "LedgerEntry",
    "bool_param",
    "canonical_endpoint",
    "check_notebook_task",
    "int_param",
    "maybe_int",
]

LIFE_CYCLE_STATES = frozenset(
    {"PENDING", "QUEUED", "RUNNING", "TERMINATING", "TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
    | {"BLOCKED", "WAITING_FOR_RETRY"}
)
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
RESULT_STATES = frozenset(
    {"SUCCESS", "SUCCESS_WITH_FAILURES", "FAILED", "TIMEDOUT", "CANCELED", "EXCLUDED", "DISABLED"}
    | {"MAXIMUM_CONCURRENT_RUNS_REACHED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED"}
)
#: The Databricks error code of each HTTP status, for errors raised without one.
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MAX_TOKEN_LENGTH = 64
MAX_TASK_KEY_LENGTH = 100
_NOTEBOOK_SOURCES = ("WORKSPACE", "GIT")


class FakeDatabricksError(Exception):
    """
    A Databricks-shaped error: HTTP ``status`` plus ``{"error_code": ..., "message": ...}``.

    :param status: HTTP status code.
    :param message: human-readable message.
    :param error_code: Databricks error code; derived from ``status`` when None; ``""`` for a body
        without one, ``{"error": message}``, as a gateway in front of the workspace answers
        (apache/airflow#60444).
    :param retry_after: seconds for a ``Retry-After`` header (a throttled call), or None.
    """

    def __init__(
        self, status: int, message: str, error_code: str | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {error_code or ERROR_CODES.get(status, 'UNKNOWN')}: {message}")
        self.status = status
        self.message = message
        self.gateway = error_code == ""
        self.error_code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "")
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        """The JSON body Databricks (or, for ``error_code=""``, a gateway) sends with this error."""
        if self.gateway:
            return {"error": self.message}
        return {"error_code": self.error_code, "message": self.message}

    def headers(self) -> dict[str, str]:
        """
        The response headers: ``Retry-After`` in whole seconds (at least 1) for a throttled call.

        Whole seconds because that is what the platform sends: the Databricks SDK parses the header
        as an integer only ("this is what Databricks platform returns", ``errors/customizer.py``).
        """
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def reply(self) -> ApiReply:
        """This error as an :class:`ApiReply`."""
        return ApiReply(self.status, self.body(), self.headers())


@dataclass(frozen=True)
class ApiReply:
    """What the fake answers one API call: HTTP status, JSON body, extra headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerEntry:
    """
    One API call the fake answered, in arrival order.

    :param endpoint: canonical endpoint, e.g. ``"runs/submit"``, ``"run-now"``, ``"jobs/list"``.
    :param method: HTTP method.
    :param body: the request's JSON body; for GET its query parameters (strings) plus any JSON body.
        Nothing is redacted.
    :param status: the HTTP status the client saw (an injected fault's status included).
    :param run_id: the run the call was about or created, when there is one.
    :param timestamp: ``time.time()`` when the call arrived.
    :param injected: the status came from :meth:`FakeDatabricksState.inject_fault`.
    :param handled: the fake processed the request (False for a fault injected before handling,
        and for a throttled call).
    :param created: the call created a new run (an idempotent replay does not).
    :param throttled: the realism layer's rate limit refused the call (HTTP 429, nothing done).
    """

    endpoint: str
    method: str
    body: dict[str, Any]
    status: int
    run_id: int | None
    timestamp: float
    injected: bool = False
    handled: bool = True
    created: bool = False
    throttled: bool = False

    def to_dict(self) -> dict[str, Any]:
        """This entry as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        """
        Rebuild an entry from :meth:`to_dict` output.

        :param data: the dict.
        """
        return cls(**data)


def canonical_endpoint(name: str) -> str:
    """
    Normalise ``"/api/2.2/jobs/runs/get"``, ``"jobs/runs/get"`` or ``"runs/get"`` to ``"runs/get"``.

    Jobs endpoints keep their ``jobs/`` prefix (``"jobs/list"``); run-now is ``"run-now"``.

    :param name: an endpoint name or API path.
    """
    parts = [p for p in name.strip().split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[1:]
    if parts and parts[0][:1].isdigit():
        parts = parts[1:]
    path = "/".join(parts)
    if path.startswith("jobs/runs/") or path == "jobs/run-now":
        path = path[len("jobs/") :]
    return path


def int_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    """
    An integer request parameter (query parameters arrive as strings).

    :raises FakeDatabricksError: 400 when it is missing without a default, or not an integer.
    """
    value = params.get(name)
    if (value is None or value == "") and default is not None:
        return default
    if value is None or value == "":
        raise FakeDatabricksError(400, f"Missing required field: {name}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FakeDatabricksError(400, f"Invalid value for {name}: {value!r}") from None


def bool_param(value: Any) -> bool:
    """A boolean request parameter: JSON ``true`` or the query strings ``true``/``1``."""
    return value is True or str(value).lower() in ("true", "1")


def maybe_int(value: Any) -> int | None:
    """``int(value)``, or None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_notebook_task(notebook_task: Any) -> None:
    """A ``notebook_task`` needs a ``notebook_path``; ``source`` is ``WORKSPACE`` or ``GIT`` if given."""
    if notebook_task is None:
        return
    if not isinstance(notebook_task, dict):
        raise FakeDatabricksError(400, "notebook_task must be an object")
    path = notebook_task.get("notebook_path")
    if not isinstance(path, str) or not path:
        raise FakeDatabricksError(400, "Missing required field: notebook_task.notebook_path")
    source = notebook_task.get("source")
    if source not in (None, "", *_NOTEBOOK_SOURCES):
        raise FakeDatabricksError(400, f"Invalid notebook_task.source {source!r}: expected WORKSPACE or GIT")
    parameters = notebook_task.get("base_parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise FakeDatabricksError(400, "notebook_task.base_parameters must be an object")
