"""
A fake Databricks Jobs API on 127.0.0.1 that the real ``DatabricksHook`` talks to unmodified.

Contract:

- **Endpoints** (``/api/2.1/...`` and ``/api/2.2/...``): ``jobs/runs/submit``, ``jobs/run-now``,
  ``jobs/runs/get``, ``jobs/runs/get-output``, ``jobs/runs/cancel``, ``jobs/runs/cancel-all``,
  ``jobs/runs/repair``, ``jobs/runs/list``, ``jobs/get``, ``jobs/list``, ``jobs/create``,
  ``jobs/reset``, ``jobs/update``. Any other path answers 404 ``ENDPOINT_NOT_FOUND``; a request
  without an ``Authorization`` header answers 401. Errors are ``{"error_code", "message"}``.
- **Lifecycle**: a run is created ``PENDING``; it answers ``PENDING`` to the first
  ``pending_polls`` runs/get calls, then ``RUNNING``. With ``lifecycle="manual"`` it stays
  ``RUNNING`` until :meth:`~FakeDatabricksControl.finish_run`; with ``lifecycle="clock"`` it is
  ``TERMINATED`` with ``final_result`` once ``run_duration`` seconds (``time.monotonic``) have passed
  since its creation, evaluated lazily whenever the run is read. ``set_run_state`` pins a run in any
  state (the clock stops moving it). runs/cancel ends a live run ``TERMINATED``/``CANCELED`` and is a
  no-op on a terminal one. An expired run answers 404 ``RESOURCE_DOES_NOT_EXIST`` (or 400
  ``INVALID_PARAMETER_VALUE`` with ``missing_run_status=400``, as some workspaces do).
- **Idempotency**: ``idempotency_token`` (at most 64 characters, else 400) on runs/submit, and on
  run-now per job, returns the first run's id and creates no run.
- **Runs and tasks**: every run has ``tasks``; each task has its own run id, which runs/get and
  runs/get-output accept. runs/get-output on the parent run answers 400, as Databricks does. A
  runs/submit in the single-task format (a top-level ``notebook_task``, ...) gets one task keyed
  by its ``run_name`` (first 100 characters; ``Untitled`` without one), which is how the stock
  ``DatabricksNotebookOperator`` finds its task run. A ``notebook_task`` without
  ``notebook_path``, or with a ``source`` other than ``WORKSPACE``/``GIT``, answers 400.
- **Faults**: :meth:`~FakeDatabricksControl.inject_fault` makes the next calls to one endpoint fail,
  before handling or after it (the request takes effect, the client sees the error).
- **Ledger**: every API call is a :class:`LedgerEntry`; control calls are not recorded.
- **Realism** (:class:`~airflow_resumable.testing.realism.Realism`, ``realism=`` and
  :meth:`~FakeDatabricksControl.set_realism`): a new run is missing from runs/get, runs/get-output,
  runs/cancel, runs/repair and runs/list for ``visibility_lag`` seconds (an idempotency-token
  replay still returns its id); past ``throttle_burst`` calls at ``throttle_rate`` per second every
  API call answers 429 ``REQUEST_LIMIT_EXCEEDED`` with a ``Retry-After`` header; runs/list pages
  at 20 (at most 25) and jobs/list at 20 (at most 100), capped by ``page_size``, with
  ``page_token``/``offset``, ``next_page_token`` and ``has_more``; a run that ended ``retention``
  seconds ago is gone from the history. The default, ``Realism.documented()``, adds only the
  documented page sizes. Each behaviour's public source is on the docs' fidelity page
  (``docs/fidelity.md``).

Point Airflow at it with :func:`databricks_connection_env`. The hook keeps only the *hostname* of
the connection host (it drops scheme and port) and builds ``{schema or "https"}://{host}:{port}``,
so the connection needs ``host=127.0.0.1``, ``port=<port>`` and ``schema=http``.

Run it in-process with :class:`FakeDatabricks`, or as its own process (its runs outlive a killed
Airflow worker) with :class:`FakeDatabricksProcess` or
``python -m airflow_resumable.testing.databricks --port 0 --lifecycle manual`` (``--realism
'{"visibility_lag": 2.0}'`` takes a :meth:`~airflow_resumable.testing.realism.Realism.to_dict`), which prints
``READY http://127.0.0.1:PORT`` once it accepts connections; :class:`FakeDatabricksClient` controls
it over HTTP (``/fake/...``). Both implement :class:`FakeDatabricksControl`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from airflow_resumable.testing._databricks_app import main, serve
from airflow_resumable.testing._databricks_state import FakeDatabricksState
from airflow_resumable.testing._databricks_wire import FakeDatabricksError, LedgerEntry, canonical_endpoint
from airflow_resumable.testing._service_process import ServiceProcess
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    import os
    from types import TracebackType

    from pydantic import JsonValue
    from werkzeug.serving import BaseWSGIServer

__all__ = [
    "FakeDatabricks",
    "FakeDatabricksClient",
    "FakeDatabricksControl",
    "FakeDatabricksDriver",
    "FakeDatabricksError",
    "FakeDatabricksProcess",
    "FakeDatabricksState",
    "LedgerEntry",
    "databricks_connection_env",
]

log = logging.getLogger(__name__)

FAKE_TOKEN = "dapi-fake-token"
_SUBMIT_ENDPOINTS = ("runs/submit", "run-now")
#: The body of a 404 that is not a missing run: a gateway's answer for a path it does not serve
#: (apache/airflow#60444 quotes it for ``/api/2.2/sql/endpoints``).
RUNS_GET_LOOKALIKE = "Bad Target: /api/2.2/jobs/runs/get"


class FakeDatabricksControl(Protocol):
    """What a test can do to a fake Databricks, in-process (:class:`FakeDatabricks`) or over HTTP."""

    @property
    def url(self) -> str:
        """The fake's base url, ``http://127.0.0.1:PORT``."""
        ...

    def finish_run(
        self,
        run_id: int,
        result_state: str = "SUCCESS",
        state_message: str = "",
        *,
        notebook_result: str | None = None,
        error: str | None = None,
    ) -> None:
        """Terminate a run with ``result_state``; ``notebook_result``/``error`` feed runs/get-output."""
        ...

    def set_run_state(
        self, run_id: int, life_cycle_state: str, result_state: str | None = None, state_message: str = ""
    ) -> None:
        """Pin a run in any life cycle state (``QUEUED``, ``BLOCKED``, ``INTERNAL_ERROR``, ...)."""
        ...

    def expire_run(self, run_id: int) -> None:
        """Make the API answer "does not exist" for a run, and forget its idempotency token."""
        ...

    def repair_run(self, run_id: int) -> int:
        """Start a repair of a terminated run (it is ``RUNNING`` again); return the repair id."""
        ...

    def inject_fault(
        self,
        endpoint: str,
        status: int,
        count: int = 1,
        *,
        after_handling: bool = False,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``count`` (-1: all) calls to ``endpoint`` answer HTTP ``status``."""
        ...

    def clear_faults(self) -> None:
        """Remove every pending injected fault and stall."""
        ...

    def stall_responses(self, endpoint: str, seconds: float, count: int = 1) -> None:
        """Carry out the next ``count`` calls to ``endpoint`` at once, answer ``seconds`` later."""
        ...

    def set_lifecycle(
        self, lifecycle: str, *, run_duration: float | None = None, final_result: str | None = None
    ) -> None:
        """Switch between ``"manual"`` and ``"clock"`` lifecycles."""
        ...

    def set_realism(self, realism: Realism) -> None:
        """Switch the fake's realism (visibility lag, throttling, page size, retention) from now on."""
        ...

    def create_job(self, name: str, settings: dict[str, Any] | None = None) -> int:
        """Create a job for run-now and return its ``job_id``."""
        ...

    def get_run(self, run_id: int) -> dict[str, Any]:
        """A run (or task run) as runs/get renders it, expired or not; not counted as a poll."""
        ...

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first."""
        ...

    def ledger(self) -> list[LedgerEntry]:
        """Every API call, oldest first."""
        ...

    def reset(self) -> None:
        """Forget all jobs, runs, tokens, faults and ledger entries."""
        ...

    def calls(self, endpoint: str) -> list[LedgerEntry]:
        """
        The ledger entries for one endpoint.

        :param endpoint: e.g. ``"runs/get"`` or ``"/api/2.2/jobs/runs/get"``.
        """
        name = canonical_endpoint(endpoint)
        return [entry for entry in self.ledger() if entry.endpoint == name]

    def submissions(self) -> list[LedgerEntry]:
        """The runs/submit and run-now calls that created a run (replays and lost requests excluded)."""
        return [e for e in self.ledger() if e.endpoint in _SUBMIT_ENDPOINTS and e.created]

    def cancels(self) -> list[LedgerEntry]:
        """The runs/cancel calls the fake processed."""
        return [entry for entry in self.calls("runs/cancel") if entry.handled]

    def wait_for_run_state(self, run_id: int, life_cycle_state: str, timeout: float = 5.0) -> dict[str, Any]:
        """
        Poll (every 10 ms) until the run's ``life_cycle_state`` matches, then return the run.

        :param run_id: the run.
        :param life_cycle_state: the state to wait for.
        :param timeout: seconds before :class:`TimeoutError`.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run["state"]["life_cycle_state"] == life_cycle_state:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {run_id} is {run['state']}, not {life_cycle_state}, after {timeout}s"
                )
            time.sleep(0.01)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeDatabricks(FakeDatabricksControl):
    """
    The fake served from a thread of this process; a context manager.

    :param lifecycle: ``"manual"`` (runs stay ``RUNNING`` until :meth:`finish_run`) or ``"clock"``.
    :param run_duration: seconds a run takes in clock mode.
    :param final_result: result state of a run the clock terminates.
    :param pending_polls: runs/get calls that see a new run ``PENDING`` before it is ``RUNNING``.
    :param missing_run_status: 404 (default) or 400: the status for an unknown or expired run.
    :param realism: how unkind the fake is; ``Realism.documented()`` (documented page sizes only)
        when None.
    :param port: port on 127.0.0.1; 0 picks a free one.
    """

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "SUCCESS",
        pending_polls: int = 1,
        missing_run_status: int = 404,
        realism: Realism | None = None,
        port: int = 0,
    ) -> None:
        self.state = FakeDatabricksState(
            lifecycle,
            run_duration=run_duration,
            final_result=final_result,
            pending_polls=pending_polls,
            missing_run_status=missing_run_status,
            realism=realism,
        )
        self._requested_port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("FakeDatabricks is not started")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (after :meth:`start`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> FakeDatabricksClient:
        """A :class:`FakeDatabricksClient` for this server (drives it over HTTP, like process mode)."""
        return FakeDatabricksClient(self.url)

    def start(self) -> FakeDatabricks:
        """Start serving; returns once the server answers HTTP requests."""
        if self._server is not None:
            return self
        self._server = serve(self.state, self._requested_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        FakeDatabricksClient(self.url).wait_until_ready(timeout=10.0)
        log.info("fake Databricks serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeDatabricks:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def finish_run(
        self,
        run_id: int,
        result_state: str = "SUCCESS",
        state_message: str = "",
        *,
        notebook_result: str | None = None,
        error: str | None = None,
    ) -> None:
        self.state.finish_run(
            run_id, result_state, state_message, notebook_result=notebook_result, error=error
        )

    def set_run_state(
        self, run_id: int, life_cycle_state: str, result_state: str | None = None, state_message: str = ""
    ) -> None:
        self.state.set_run_state(run_id, life_cycle_state, result_state, state_message)

    def expire_run(self, run_id: int) -> None:
        self.state.expire_run(run_id)

    def repair_run(self, run_id: int) -> int:
        return self.state.repair_run(run_id)

    def inject_fault(
        self,
        endpoint: str,
        status: int,
        count: int = 1,
        *,
        after_handling: bool = False,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        self.state.inject_fault(
            endpoint, status, count, after_handling=after_handling, error_code=error_code, message=message
        )

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def stall_responses(self, endpoint: str, seconds: float, count: int = 1) -> None:
        self.state.stall_responses(endpoint, seconds, count)

    def set_lifecycle(
        self, lifecycle: str, *, run_duration: float | None = None, final_result: str | None = None
    ) -> None:
        self.state.set_lifecycle(lifecycle, run_duration=run_duration, final_result=final_result)

    def set_realism(self, realism: Realism) -> None:
        self.state.set_realism(realism)

    @property
    def realism(self) -> Realism:
        """The realism in force."""
        return self.state.realism

    def create_job(self, name: str, settings: dict[str, Any] | None = None) -> int:
        return self.state.create_job(name, settings)

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self.state.get_run(run_id)

    def runs(self) -> list[dict[str, Any]]:
        return self.state.runs()

    def ledger(self) -> list[LedgerEntry]:
        return self.state.ledger()

    def reset(self) -> None:
        self.state.reset()


class FakeDatabricksClient(FakeDatabricksControl):
    """
    Controls a fake Databricks over HTTP (its ``/fake/...`` endpoints), e.g. one in another process.

    Errors come back as :class:`FakeDatabricksError`.

    :param url: the fake's base url, ``http://127.0.0.1:PORT``.
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The fake's base url."""
        return self._url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with _NO_PROXY.open(req, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {"message": str(exc)}
            raise FakeDatabricksError(exc.code, error.get("message", ""), error.get("error_code")) from None

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """
        Wait until the fake answers ``/fake/health``.

        :param timeout: seconds before :class:`TimeoutError`.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/fake/health")
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"fake Databricks at {self.url} not ready after {timeout}s") from exc
                time.sleep(0.02)

    def finish_run(
        self,
        run_id: int,
        result_state: str = "SUCCESS",
        state_message: str = "",
        *,
        notebook_result: str | None = None,
        error: str | None = None,
    ) -> None:
        args = {"result_state": result_state, "state_message": state_message, "error": error}
        self._call("POST", f"/fake/runs/{run_id}/finish", {**args, "notebook_result": notebook_result})

    def set_run_state(
        self, run_id: int, life_cycle_state: str, result_state: str | None = None, state_message: str = ""
    ) -> None:
        args = {"life_cycle_state": life_cycle_state, "result_state": result_state}
        self._call("POST", f"/fake/runs/{run_id}/state", {**args, "state_message": state_message})

    def expire_run(self, run_id: int) -> None:
        self._call("POST", f"/fake/runs/{run_id}/expire", {})

    def repair_run(self, run_id: int) -> int:
        return int(self._call("POST", f"/fake/runs/{run_id}/repair", {})["repair_id"])

    def inject_fault(
        self,
        endpoint: str,
        status: int,
        count: int = 1,
        *,
        after_handling: bool = False,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        args = {"endpoint": endpoint, "status": status, "count": count, "after_handling": after_handling}
        self._call("POST", "/fake/faults", {**args, "error_code": error_code, "message": message})

    def clear_faults(self) -> None:
        self._call("DELETE", "/fake/faults")

    def stall_responses(self, endpoint: str, seconds: float, count: int = 1) -> None:
        self._call("POST", "/fake/stalls", {"endpoint": endpoint, "seconds": seconds, "count": count})

    def set_lifecycle(
        self, lifecycle: str, *, run_duration: float | None = None, final_result: str | None = None
    ) -> None:
        args = {"lifecycle": lifecycle, "run_duration": run_duration, "final_result": final_result}
        self._call("POST", "/fake/lifecycle", args)

    def set_realism(self, realism: Realism) -> None:
        self._call("POST", "/fake/realism", realism.to_dict())

    @property
    def realism(self) -> Realism:
        """The realism in force in the fake."""
        return Realism.from_dict(self._call("GET", "/fake/realism"))

    def create_job(self, name: str, settings: dict[str, Any] | None = None) -> int:
        return int(self._call("POST", "/fake/jobs", {"name": name, "settings": settings})["job_id"])

    def get_run(self, run_id: int) -> dict[str, Any]:
        run: dict[str, Any] = self._call("GET", f"/fake/runs/{run_id}")
        return run

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self._call("GET", "/fake/runs")["runs"]
        return runs

    def ledger(self) -> list[LedgerEntry]:
        return [LedgerEntry.from_dict(entry) for entry in self._call("GET", "/fake/ledger")["entries"]]

    def reset(self) -> None:
        self._call("POST", "/fake/reset", {})


class FakeDatabricksProcess(ServiceProcess):
    """
    The fake in its own process (``python -m airflow_resumable.testing.databricks``); a context manager.

    Its runs outlive any Airflow process the test kills. ``__enter__`` waits (bounded) for the
    ``READY`` line; ``__exit__`` terminates the process, then kills it if it lingers.

    :param lifecycle: ``"manual"`` or ``"clock"``.
    :param run_duration: seconds a run takes in clock mode.
    :param final_result: result state of a run the clock terminates.
    :param pending_polls: runs/get calls that see a new run ``PENDING`` before it is ``RUNNING``.
    :param missing_run_status: 404 or 400, the status for an unknown or expired run.
    :param realism: how unkind the fake is (``--realism``); ``Realism.documented()`` when None.
    :param startup_timeout: seconds to wait for ``READY``.
    :param log_path: file for the process's log (stderr); inherited from this process when None.
    """

    service_label = "fake Databricks"

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "SUCCESS",
        pending_polls: int = 1,
        missing_run_status: int = 404,
        realism: Realism | None = None,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        args = [f"--lifecycle={lifecycle}", f"--run-duration={run_duration}"]
        args += [f"--final-result={final_result}", f"--pending-polls={pending_polls}"]
        args += [f"--missing-run-status={missing_run_status}"]
        if realism is not None:
            args.append(f"--realism={json.dumps(realism.to_dict())}")
        super().__init__(
            "airflow_resumable.testing.databricks", args, startup_timeout=startup_timeout, log_path=log_path
        )

    @property
    def client(self) -> FakeDatabricksClient:
        """A :class:`FakeDatabricksClient` for the process."""
        return FakeDatabricksClient(self.url)


def databricks_connection_env(
    url: str, conn_id: str = "databricks_default", token: str = FAKE_TOKEN
) -> dict[str, str]:
    """
    The environment variable that makes Airflow's Databricks hooks talk to the fake at ``url``.

    The hook keeps only the hostname of the connection's host and builds
    ``{schema or "https"}://{host}:{port}/api/...``, so plain http needs the ``schema`` and ``port``
    fields; a host of ``http://127.0.0.1:PORT`` alone would be called as ``https://127.0.0.1``.

    :param url: the fake's base url, ``http://127.0.0.1:PORT``.
    :param conn_id: the Airflow connection id.
    :param token: the personal access token (the fake accepts any).
    :return: ``{"AIRFLOW_CONN_<CONN_ID>": "<connection as JSON>"}``.
    """
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}")
    connection = {
        "conn_type": "databricks",
        "host": parts.hostname,
        "port": parts.port,
        "schema": parts.scheme or "http",
        "password": token,
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}


if __name__ == "__main__":
    sys.exit(main())


class FakeDatabricksDriver:
    """
    The contract kit's ``CloudDriver`` over a fake Databricks: counts and controls runs.

    :param fake: a :class:`FakeDatabricks` (or any :class:`FakeDatabricksControl`).
    :param submit_endpoint: the endpoint :meth:`throttle_next_submit` throttles (``runs/submit``
        or ``run-now``).

    .. versionadded:: 0.2.0
    """

    def __init__(self, fake: FakeDatabricksControl, submit_endpoint: str = "runs/submit") -> None:
        self.fake = fake
        self.submit_endpoint = submit_endpoint

    def submitted_ids(self) -> list[JsonValue]:
        """Runs the fake created (idempotent replays excluded)."""
        return [entry.run_id for entry in self.fake.submissions()]

    def cancelled_ids(self) -> list[JsonValue]:
        """Runs the fake was asked to cancel."""
        return [entry.run_id for entry in self.fake.cancels()]

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        """Terminate a run SUCCESS or FAILED."""
        self.fake.finish_run(
            int(str(external_id)), "SUCCESS" if succeeded else "FAILED", "" if succeeded else "boom"
        )

    def expire(self, external_id: JsonValue) -> None:
        """Drop a run from the run history."""
        self.fake.expire_run(int(str(external_id)))

    def throttle_next_submit(self) -> None:
        """Answer the next submit call with HTTP 429 (nothing is created)."""
        self.fake.inject_fault(self.submit_endpoint, 429)

    def state_of(self, external_id: JsonValue) -> str:
        """
        The run's ``life_cycle_state`` (and ``result_state`` once ended) as the fake shows it, for
        the contract kit to tell a fake that answers wrong from an operator that reads it wrong.

        .. versionadded:: 0.5.0
        """
        state = self.fake.get_run(int(str(external_id))).get("state") or {}
        return "/".join(
            str(part) for part in (state.get("life_cycle_state"), state.get("result_state")) if part
        )

    def set_realism(self, realism: Realism) -> None:
        """
        Switch the fake's realism (visibility lag, throttling, page size, retention) from now on.

        .. versionadded:: 0.4.0
        """
        self.fake.set_realism(realism)

    def not_found_lookalike(self) -> str | None:
        """
        The 404 :meth:`refuse_next_status_read_like_not_found` answers, in one line.

        .. versionadded:: 0.5.0
        """
        return f"404 {{'error': {RUNS_GET_LOOKALIKE!r}}}"

    def refuse_next_status_read_like_not_found(self) -> None:
        """
        Answer the next ``runs/get`` with HTTP 404 and a gateway's body, ``{"error": "Bad Target:
        /api/2.2/jobs/runs/get"}`` (apache/airflow#60444: a workspace answered exactly this for a
        path it did not serve), while the run goes on: a 404 is not always a forgotten run.

        .. versionadded:: 0.5.0
        """
        self.fake.inject_fault("runs/get", 404, error_code="", message=RUNS_GET_LOOKALIKE)

    def lose_next_submit_response(self) -> None:
        """
        Create the run of the next submit call, then answer HTTP 500 (a lost response).

        .. versionadded:: 0.4.0
        """
        self.fake.inject_fault(self.submit_endpoint, 500, after_handling=True)
