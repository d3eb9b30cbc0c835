"""
The control side of :mod:`airflow_resumable.testing.aws`: what a test can do to the controller,
and the HTTP client that does it from another process.

Private: import the public names from :mod:`airflow_resumable.testing.aws`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Protocol

from airflow_resumable.testing._aws_jobs import kind_for
from airflow_resumable.testing._aws_wire import LedgerEntry
from airflow_resumable.testing.realism import Realism

__all__ = ["MotoControl", "MotoControlClient", "MotoControlError"]


class MotoControlError(Exception):
    """A control call was refused: ``status`` 404 for an unknown job, 400 for a bad argument."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class MotoControl(Protocol):
    """
    What a test can do to the controller, in-process (:class:`MotoServer`) or over HTTP.

    .. versionadded:: 0.1.0
    """

    @property
    def url(self) -> str:
        """The base url, ``http://127.0.0.1:PORT``: the ``endpoint_url`` of every client."""
        ...

    def finish(self, job_id: str, *, succeeded: bool = True, reason: str = "") -> None:
        """End a job (from any state) with its service's success or failure state."""
        ...

    def set_state(self, job_id: str, state: str, reason: str = "") -> None:
        """Pin a job in any state of its service (e.g. ``CANCELLING``, ``INTERRUPTED``)."""
        ...

    def expire(self, job_id: str) -> None:
        """Forget a job (the service answers "not found") and its idempotency token."""
        ...

    def job(self, job_id: str) -> dict[str, Any]:
        """``{job_id, service, state, parent, token, region, pinned, finished}`` of one job."""
        ...

    def jobs(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every job created through the controller, oldest first."""
        ...

    def inject_fault(
        self,
        operation: str,
        status: int = 500,
        count: int = 1,
        *,
        after_handling: bool = False,
        code: str | None = None,
        message: str | None = None,
        service: str | None = None,
    ) -> None:
        """
        Make the next ``count`` (-1: all) calls of ``operation`` answer HTTP ``status``.

        :param operation: boto3 operation name, e.g. ``"SubmitJob"``.
        :param after_handling: carry the call out first, then answer the error (a lost response).
        :param code: the error code; by default ``ThrottlingException`` for 400,
            ``TooManyRequestsException`` for 429, ``InternalServerException`` for 500.
        :param service: only calls of this botocore service (``StartJobRun`` exists twice).
        """
        ...

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        ...

    def set_lifecycle(
        self,
        lifecycle: str,
        *,
        run_duration: float | None = None,
        final_result: str | None = None,
        reads_per_state: int | None = None,
    ) -> None:
        """Switch between ``"manual"`` and ``"clock"``; ``final_result`` is succeeded or failed."""
        ...

    def ledger(self) -> list[LedgerEntry]:
        """Every API call, oldest first."""
        ...

    def fake_errors(self) -> list[str]:
        """
        What the controller itself failed on (a job kind's bug), oldest first; each such call was
        answered 500 ``InternalFailure`` naming it.

        .. versionadded:: 0.5.0
        """
        ...

    def set_realism(self, realism: Realism) -> None:
        """
        Switch the visibility lag, throttling, page sizes and history retention from now on.

        .. versionadded:: 0.4.0
        """
        ...

    @property
    def realism(self) -> Realism:
        """The realism in force."""
        ...

    def reset(self) -> None:
        """Forget every moto resource, job, token, fault and ledger entry."""
        ...

    def throttled_calls(self, service: str | None = None) -> list[LedgerEntry]:
        """The calls the realism's rate limit refused (nothing was carried out)."""
        return [e for e in self.ledger() if e.fault == "throttled" and service in (None, e.service)]

    def throttle(
        self, operation: str, count: int = 1, *, status: int = 400, service: str | None = None
    ) -> None:
        """Answer the next ``count`` calls of ``operation`` with ``ThrottlingException`` (400 or 429)."""
        self.inject_fault(operation, status, count, code="ThrottlingException", service=service)

    def lose_response(
        self, operation: str, count: int = 1, *, status: int = 500, service: str | None = None
    ) -> None:
        """Carry out the next ``count`` calls of ``operation``, then answer a 5xx instead."""
        self.inject_fault(operation, status, count, after_handling=True, service=service)

    def calls(self, operation: str, service: str | None = None) -> list[LedgerEntry]:
        """The ledger entries of one operation."""
        return [e for e in self.ledger() if e.operation == operation and service in (None, e.service)]

    def submissions(self, service: str | None = None) -> list[LedgerEntry]:
        """
        The submit calls that created jobs (token replays and failed calls excluded).

        :param service: a botocore service name or a job kind's name (``sagemaker-training``).
        """
        return [e for e in self.ledger() if e.created and service in (None, e.service, e.kind)]

    def cancels(self, service: str | None = None) -> list[LedgerEntry]:
        """The cancel calls the service accepted (``TerminateJob``, ``CancelJobRun``, ``CancelSteps``)."""
        return [
            e
            for e in self.ledger()
            if (kind := kind_for(e.service, e.operation)) is not None
            and e.operation in kind.cancel_operations
            and service in (None, e.service, kind.kind_name)
            and e.handled
            and (e.status < 300 or e.fault == "after")
        ]

    def wait_for_state(self, job_id: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll (every 10 ms, without counting as a status read) until the job is in ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == state:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is {job['state']}, not {state}, after {timeout}s")
            time.sleep(0.01)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MotoControlClient(MotoControl):
    """
    Drives a controller over HTTP (``/_airflow_resumable/...``), e.g. one in another process.

    :param url: the controller's base url.
    :param timeout: seconds per HTTP request.

    .. versionadded:: 0.1.0
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The controller's base url."""
        return self._url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_airflow_resumable{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with _NO_PROXY.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise MotoControlError(exc.code, message) from None

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until the controller answers its health check."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/health")
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"moto controller at {self.url} not ready after {timeout}s") from exc
                time.sleep(0.02)

    def finish(self, job_id: str, *, succeeded: bool = True, reason: str = "") -> None:
        self._call("POST", f"/jobs/{job_id}/finish", {"succeeded": succeeded, "reason": reason})

    def set_state(self, job_id: str, state: str, reason: str = "") -> None:
        self._call("POST", f"/jobs/{job_id}/state", {"state": state, "reason": reason})

    def expire(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{job_id}/expire", {})

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")
        return job

    def jobs(self, service: str | None = None) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._call("GET", "/jobs" + (f"?service={service}" if service else ""))[
            "jobs"
        ]
        return jobs

    def inject_fault(
        self,
        operation: str,
        status: int = 500,
        count: int = 1,
        *,
        after_handling: bool = False,
        code: str | None = None,
        message: str | None = None,
        service: str | None = None,
    ) -> None:
        args = {"operation": operation, "status": status, "count": count, "after_handling": after_handling}
        self._call("POST", "/faults", {**args, "code": code, "message": message, "service": service})

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_lifecycle(
        self,
        lifecycle: str,
        *,
        run_duration: float | None = None,
        final_result: str | None = None,
        reads_per_state: int | None = None,
    ) -> None:
        args = {"lifecycle": lifecycle, "run_duration": run_duration, "final_result": final_result}
        self._call("POST", "/lifecycle", {**args, "reads_per_state": reads_per_state})

    def ledger(self) -> list[LedgerEntry]:
        return [LedgerEntry.from_dict(entry) for entry in self._call("GET", "/ledger")["entries"]]

    def fake_errors(self) -> list[str]:
        return [str(text) for text in self._call("GET", "/fake_errors")["errors"]]

    def set_realism(self, realism: Realism) -> None:
        self._call("POST", "/realism", realism.to_dict())

    @property
    def realism(self) -> Realism:
        return Realism.from_dict(self._call("GET", "/realism"))

    def reset(self) -> None:
        self._call("POST", "/reset", {})
