"""
A real Airflow 3 deployment on this machine, for system tests and the demo.

:class:`AirflowCluster` runs ``airflow api-server``, ``airflow scheduler``,
``airflow dag-processor`` and optionally ``airflow triggerer`` as separate processes against a
throw-away ``AIRFLOW_HOME``, drives them through the public REST API (``/api/v2``) and finds the
processes of a running task instance, so that a test can disrupt them the way a worker shutdown
or a crash does.

Two topologies: LocalExecutor on a sqlite database in the home (the default; 3.3.2 needs no
setting for it and opens sqlite in WAL mode) or on any ``database_url``; and CeleryExecutor
(``executor="CeleryExecutor"``, a PostgreSQL ``database_url`` and a Redis ``broker_url``), whose
``airflow celery worker`` processes are started and shut down one by one
(:meth:`AirflowCluster.start_celery_worker`, :meth:`AirflowCluster.shut_down_celery_worker`).
Each deployment prefixes its Redis keys with a key of its own, so deployments sharing one Redis
never take each other's tasks.

Authentication: ``[core] simple_auth_manager_all_admins = True``. The SimpleAuthManager then adds
an admin JWT to every request itself (``SimpleAllAdminMiddleware``): REST calls need no
credentials and no ``/auth/token`` round trip.

Finding a task's processes: a LocalExecutor worker, and a Celery pool process, *is* the
supervisor of the task it runs. It forks the task process, which titles itself
``airflow worker -- <ti id>`` once it got its start-up message; the supervisor is its parent. The
task instance ``id`` comes from the REST API.

Waiting for events: :meth:`AirflowCluster.wait_for_log_line` reads the task's log file under
``AIRFLOW_HOME/logs`` (the supervisor writes there what the task logs), so a test can wait for
the line an operator logs when it starts polling, instead of sleeping.

Example::

    with AirflowCluster(Path("system_tests/dags")) as cluster:
        run_id = cluster.trigger("my_dag")
        cluster.wait_for_log_line("my_dag", run_id, "my_task", "polling", timeout=60)
        cluster.task_processes("my_dag", "my_task", run_id).signal_supervisor(signal.SIGTERM)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

from airflow_resumable.testing._cluster_process import (
    ClusterProcessDied,
    ManagedProcess,
    free_port,
    stop_process_trees,
    wait_until,
)
from airflow_resumable.testing._cluster_rest import ClusterRestApi

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import pytest

__all__ = [
    "FAST_SETTINGS",
    "AirflowCluster",
    "CeleryWorker",
    "ClusterProcessDied",
    "Restart",
    "TaskProcesses",
    "WorkerStop",
    "airflow_cluster",
    "wait_until",
]

log = logging.getLogger(__name__)

#: Settings that make a small cluster react within seconds (``env`` may override any of them).
FAST_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__METRICS__STATSD_ON": "False",
    # New DAG files are noticed within 2 s, changed ones re-parsed within 5 s.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
    # The scheduler loops (and heartbeats its job) every second or faster.
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    # Supervisors heartbeat every second: a user's mark-failed reaches the task within ~1 s.
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    # A running task whose supervisor stopped heartbeating is failed (and retried) after 10 s.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
}


@dataclass(frozen=True)
class TaskProcesses:
    """The supervisor (a LocalExecutor worker or Celery pool process) of a task instance, and its task."""

    supervisor_pid: int
    task_pid: int

    def signal_supervisor(self, sig: int) -> None:
        """Send ``sig`` to the supervisor, as a worker shutdown (e.g. a pod's SIGTERM) does."""
        os.kill(self.supervisor_pid, sig)

    def signal_task(self, sig: int) -> None:
        """Send ``sig`` to the task process only."""
        os.kill(self.task_pid, sig)

    def kill_both(self) -> tuple[int, ...]:
        """
        SIGKILL the supervisor, then the task process: a crash, nobody reports anything.

        :return: the pids that were still running (a zombie does not count) and got the signal.
        """
        killed = []
        for pid in (self.supervisor_pid, self.task_pid):
            alive = _alive(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                if alive:
                    killed.append(pid)
        return tuple(killed)

    def wait_task_gone(self, timeout: float = 30.0) -> float:
        """
        Wait until the task process has exited; return how many seconds that took.

        A zombie counts as exited: the supervisor may reap its child only seconds later.
        """
        began = time.monotonic()
        what = f"the exit of task process {self.task_pid}"
        wait_until(lambda: not _alive(self.task_pid), timeout=timeout, what=what, step=0.05)
        return time.monotonic() - began


@dataclass(frozen=True)
class Restart:
    """
    What :meth:`AirflowCluster.restart` did to one process of the cluster.

    :param name: the process (``triggerer``, ``scheduler``...).
    :param exit_code: how the old process exited after SIGTERM (0: a clean shutdown).
    :param stopped_s: seconds from SIGTERM to its exit.
    :param ready_s: seconds from SIGTERM until the new process was healthy (its first heartbeat).
    :param leftovers: descendants of the old process still alive after it exited (then killed).
    """

    name: str
    exit_code: int
    stopped_s: float
    ready_s: float
    leftovers: tuple[int, ...] = ()


@dataclass(frozen=True)
class CeleryWorker:
    """
    One ``airflow celery worker`` of a CeleryExecutor cluster.

    :param name: its process name in the cluster (and its Celery node name's first part).
    :param concurrency: pool processes, i.e. task instances it runs at once.
    :param queues: the queues it consumes (Airflow's ``default`` when empty).
    :param env: environment of this worker only, over the cluster's (e.g. ``celery_config_options``).
    """

    name: str = "celery-worker"
    concurrency: int = 4
    queues: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerStop:
    """
    How a Celery worker ended after :meth:`AirflowCluster.shut_down_celery_worker`.

    :param exit_code: its exit code; None when it was still running after the grace and killed.
    :param stopped_s: seconds from the signal until it exited (or was killed).
    :param killed: the grace ran out: the worker and every descendant got SIGKILL.
    """

    exit_code: int | None
    stopped_s: float
    killed: bool


#: Process name -> the component of ``/monitor/health`` whose heartbeat says it is up.
_HEALTH_COMPONENT = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


class AirflowCluster(ClusterRestApi):
    """
    A running Airflow deployment: api-server, scheduler, dag-processor, triggerer, Celery workers.

    REST helpers (``trigger``, ``wait_for_ti_state``, ``mark_ti``...) come from
    :class:`~airflow_resumable.testing._cluster_rest.ClusterRestApi`.

    :param dags_folder: the DAG files to serve.
    :param home: ``AIRFLOW_HOME`` to create; a temporary directory (removed on stop) when None.
    :param env: extra environment for every process, applied last (may override the defaults).
    :param executor_parallelism: task instances the scheduler runs at once (``[core] parallelism``;
        LocalExecutor worker processes).
    :param database_url: the metadata database's SQLAlchemy URL (e.g. from
        :func:`~airflow_resumable.testing.services.fresh_postgres_database`); sqlite in the home
        when None.
    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param broker_url: the Celery broker (CeleryExecutor only); the result backend is the metadata
        database.
    :param celery_workers: the Celery workers :meth:`start` launches and waits for.
    :param triggerer: also run ``airflow triggerer``.
    :param dag_ids: DAG ids :meth:`start` waits for; by default every file of ``dags_folder`` that
        Airflow's safe mode parses must have produced a DAG.
    :param start_timeout: seconds allowed for the migration and for the processes to come up.
    :param stop_timeout: seconds :meth:`stop` gives the processes before killing them.
    """

    def __init__(
        self,
        dags_folder: Path,
        home: Path | None = None,
        env: Mapping[str, str] | None = None,
        executor_parallelism: int = 4,
        *,
        database_url: str | None = None,
        executor: str = "LocalExecutor",
        broker_url: str | None = None,
        celery_workers: Sequence[CeleryWorker] = (),
        triggerer: bool = False,
        dag_ids: set[str] | None = None,
        start_timeout: float = 180.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        self._own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="airflow-cluster-"))
        self.port = 0
        self.base_url = ""
        #: The environment of every Airflow process (set by :meth:`start`).
        self.env: dict[str, str] = {}
        self._extra_env = dict(env or {})
        self._parallelism = executor_parallelism
        if executor not in ("LocalExecutor", "CeleryExecutor"):
            raise ValueError(f"executor must be LocalExecutor or CeleryExecutor, not {executor!r}")
        if executor == "CeleryExecutor" and not (broker_url and database_url):
            raise ValueError("CeleryExecutor needs a broker_url and a database_url (not sqlite)")
        self.database_url = database_url
        self.executor = executor
        self._broker_url = broker_url
        self._celery_workers = {worker.name: worker for worker in celery_workers}
        self._with_triggerer = triggerer
        self._dag_ids = dag_ids
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._processes: dict[str, ManagedProcess] = {}
        #: Processes being restarted on purpose (:meth:`restart`): :meth:`check` skips them.
        self._restarting: set[str] = set()
        self._restart_lock = threading.Lock()

    def __enter__(self) -> AirflowCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def heartbeat_timeout(self) -> float:
        """``[scheduler] task_instance_heartbeat_timeout`` of this cluster, in seconds."""
        return float(self.env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])

    def _build_env(self) -> dict[str, str]:
        # Nothing of the caller's Airflow configuration leaks in (e.g. a test's own AIRFLOW_HOME).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(FAST_SETTINGS)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                    self.database_url or f"sqlite:///{self.home / 'airflow.db'}"
                ),
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(self._parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                # Every process signs and checks the same JWTs (task tokens, UI/REST tokens).
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                # Log servers are not started (--skip-serve-logs); keep them off the fixed ports anyway.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.executor == "CeleryExecutor":
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": str(self._broker_url),
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.database_url}",
                    # kombu's Redis transport prefixes every key: deployments sharing a Redis
                    # (parallel test sessions, CI beside a developer's run) never meet.
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": (
                        f"airflow-test-{secrets.token_hex(4)}:"
                    ),
                    "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
                }
            )
        env.update(self._extra_env)
        return env

    def start(self) -> None:
        """
        Migrate the database, launch the processes, wait until they are healthy and the DAGs parsed.

        :raises ClusterProcessDied: a process exited during start-up (the message has its log tail).
        :raises TimeoutError: the cluster was not ready within ``start_timeout``.
        :raises RuntimeError: a DAG file failed to import.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = self._build_env()
        deadline = time.monotonic() + self._start_timeout
        self._migrate()
        commands = {
            "api-server": self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port)),
            "scheduler": self._airflow("scheduler", "--skip-serve-logs"),
            "dag-processor": self._airflow("dag-processor"),
        }
        if self._with_triggerer:
            commands["triggerer"] = self._airflow("triggerer", "--skip-serve-logs")
        try:
            for name, argv in commands.items():
                self._processes[name] = ManagedProcess(name, argv, self.env, self.process_log(name))
                self._processes[name].start()
            self._client = httpx.Client(base_url=self.base_url, timeout=30.0)
            for probe, what in ((self._healthy, "healthy processes"), (self._dags_parsed, "parsed DAGs")):
                wait_until(probe, timeout=max(deadline - time.monotonic(), 1), what=what, check=self.check)
            for worker in self._celery_workers.values():
                self.start_celery_worker(worker, timeout=max(deadline - time.monotonic(), 1))
        except BaseException:
            self.stop()
            raise
        log.info("Airflow cluster ready at %s (AIRFLOW_HOME %s)", self.base_url, self.home)

    def _migrate(self) -> None:
        argv = self._airflow("db", "migrate")
        migrate = ManagedProcess("db-migrate", argv, self.env, self.process_log("db-migrate"))
        migrate.start()
        try:
            code = migrate.wait(self._start_timeout)
        finally:
            migrate.stop(grace=1.0)
        if code != 0:
            raise ClusterProcessDied(f"airflow db migrate exited with {code}; see {migrate.log_path}")

    def stop(self) -> None:
        """Stop every process started, and their children; SIGKILL what is left after ``stop_timeout``."""
        if self._client is not None:
            self._client.close()
            self._client = None
        stop_process_trees([p.pid for p in self._processes.values() if p.started], self._stop_timeout)
        for proc in self._processes.values():
            proc.stop(grace=1.0)
        self._processes.clear()
        if self._own_home and os.environ.get("AIRFLOW_CLUSTER_KEEP_HOME") != "1":
            shutil.rmtree(self.home, ignore_errors=True)

    def check(self) -> None:
        """
        Raise :class:`ClusterProcessDied` (with its log tail) if a process of the cluster exited.

        A process that :meth:`restart` is stopping on purpose does not count (thread-safe: tests
        call this from many threads while one of them restarts a process).
        """
        for name, proc in list(self._processes.items()):
            if name not in self._restarting:
                proc.check_alive()

    def restart(self, name: str, grace: float = 60.0, timeout: float = 120.0) -> Restart:
        """
        Restart process ``name`` as an operator does: SIGTERM, wait for its exit, start it again.

        The old process gets ``grace`` seconds to shut down cleanly; its descendants still alive
        after it exited are killed (and listed in the result). The new process runs the same
        command with the same environment, appending to the same log. Waits (bounded) until it
        is up: for the scheduler, dag-processor and triggerer a heartbeat of the new process in
        ``/monitor/health``, for the api-server any health answer. Meanwhile :meth:`check` does
        not count the planned exit as a crash.

        :raises TimeoutError: the old process did not exit within ``grace`` (its tree is then
            killed and the new process not started), or the new one was not up within ``timeout``.
        """
        with self._restart_lock:
            old = self._processes[name]
            self._restarting.add(name)
            try:
                descendants = _descendants(old.pid)
                began = time.monotonic()
                os.kill(old.pid, signal.SIGTERM)
                try:
                    exit_code = old.wait(grace)
                except TimeoutError:
                    old.stop(grace=1.0)
                    raise
                stopped_s = time.monotonic() - began
                leftovers = tuple(p.pid for p in descendants if _alive(p.pid))
                if leftovers:
                    log.warning("%s exited, its descendants %s did not; killing them", name, leftovers)
                old.stop(grace=1.0)  # kills the leftovers, closes the log file
                started_at = datetime.now(timezone.utc)
                new = ManagedProcess(name, old.argv, self.env, self.process_log(name))
                new.start()
                self._processes[name] = new
            finally:
                self._restarting.discard(name)
        self.wait_for_heartbeat(name, started_at, timeout)
        ready_s = time.monotonic() - began
        log.info(
            "restarted %s: old exited %s after %.1fs, new up after %.1fs", name, exit_code, stopped_s, ready_s
        )
        return Restart(name, exit_code, round(stopped_s, 1), round(ready_s, 1), leftovers)

    def start_celery_worker(
        self, worker: CeleryWorker | str = "celery-worker", timeout: float = 120.0
    ) -> None:
        """
        Start an ``airflow celery worker`` (again, after a shutdown) and wait until it is ready.

        :param worker: the worker, or the name of one given to the cluster.
        :raises TimeoutError: Celery did not log that the worker is ready within ``timeout``.
        """
        if self.executor != "CeleryExecutor":
            raise RuntimeError("this cluster runs the LocalExecutor: it has no Celery workers")
        spec = worker if isinstance(worker, CeleryWorker) else self._celery_workers[worker]
        self._celery_workers[spec.name] = spec
        node = f"{spec.name}@{secrets.token_hex(3)}"
        argv = self._airflow(
            "celery", "worker", "--skip-serve-logs", "--without-mingle", "--without-gossip",
            "--concurrency", str(spec.concurrency), "--celery-hostname", node,
            "--pid", str(self.home / f"{spec.name}.pid"),
        )  # fmt: skip
        if spec.queues:
            argv += ["--queues", ",".join(spec.queues)]
        log_path = self.process_log(spec.name)
        lines_before = len(log_path.read_text(errors="replace").splitlines()) if log_path.exists() else 0
        process = ManagedProcess(spec.name, argv, {**self.env, **spec.env}, log_path)
        process.start()
        self._processes[spec.name] = process

        def ready() -> bool:
            lines = log_path.read_text(errors="replace").splitlines()[lines_before:]
            return any(f"{node} ready." in line for line in lines)

        wait_until(ready, timeout=timeout, what=f"Celery worker {node} ready", check=self.check)

    def shut_down_celery_worker(
        self, name: str = "celery-worker", sig: int = signal.SIGTERM, grace: float = 30.0
    ) -> WorkerStop:
        """
        Signal the worker's main process as a deployment tool does, wait ``grace``, then kill it all.

        SIGTERM is Celery's warm shutdown (running tasks may finish), SIGQUIT its cold one. After
        ``grace`` seconds the worker and every descendant (pool processes, supervisors, task
        processes) get SIGKILL, as a container runtime does when its grace period ends.
        """
        with self._restart_lock:
            process = self._processes[name]
            self._restarting.add(name)
        try:
            descendants = _descendants(process.pid)
            began = time.monotonic()
            os.kill(process.pid, sig)
            try:
                exit_code: int | None = process.wait(grace)
                killed = False
            except TimeoutError:
                exit_code, killed = None, True
                descendants += _descendants(process.pid)
                for proc in [psutil.Process(process.pid), *descendants]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
            stopped_s = time.monotonic() - began
            leftovers = [proc for proc in descendants if _alive(proc.pid)]
            if leftovers and not killed:
                log.info("%s exited; killing what it left behind: %s", name, [p.pid for p in leftovers])
            process.stop(grace=1.0)
            for proc in leftovers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        finally:
            with self._restart_lock:
                self._processes.pop(name, None)
                self._restarting.discard(name)
        log.info("%s stopped after %.1fs (exit code %s, killed: %s)", name, stopped_s, exit_code, killed)
        return WorkerStop(exit_code, round(stopped_s, 1), killed)

    def crash_celery_worker(self, name: str = "celery-worker") -> None:
        """SIGKILL the worker and every descendant at once: a node lost, nobody reports anything."""
        self.shut_down_celery_worker(name, signal.SIGKILL, grace=10.0)

    def celery_worker_pid(self, name: str = "celery-worker") -> int | None:
        """The process id of a Celery worker's main process; None when it is not running."""
        process = self._processes.get(name)
        return process.pid if process is not None else None

    def wait_for_heartbeat(self, name: str, since: datetime, timeout: float) -> None:
        """
        Wait until process ``name`` (``scheduler``, ``dag-processor``, ``triggerer``) is healthy and
        heartbeated after ``since``; the api-server: until it answers.

        The scheduler heartbeats at the end of a scheduling pass: once it did after ``since``,
        every pass that began earlier has committed (e.g. none still holds a DAG run that was
        paused at ``since``).
        """
        wait_until(
            lambda: self._up_since(name, since),
            timeout=timeout,
            what=f"a heartbeat of the {name} after {since.isoformat()}",
            step=0.5,
            check=self.check,
        )

    def _up_since(self, name: str, started_at: datetime) -> bool:
        """Whether process ``name`` answers (api-server) or heartbeated since ``started_at``."""
        try:
            health = self.api("GET", "/monitor/health")
        except httpx.HTTPError:
            return False
        component = _HEALTH_COMPONENT.get(name)
        if component is None:
            return True
        status = health.get(component) or {}
        beat = status.get(f"latest_{component}_heartbeat")
        if status.get("status") != "healthy" or not beat:
            return False
        at = datetime.fromisoformat(str(beat).replace("Z", "+00:00"))
        return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)) > started_at

    def process_log(self, name: str) -> Path:
        """The stdout/stderr log of process ``name`` (``scheduler``, ``api-server``...), in the home."""
        return self.home / f"{name}.log"

    def wait_for_process_log_line(self, name: str, text: str, timeout: float) -> str:
        """Wait until the stdout/stderr log of process ``name`` has a line containing ``text``; return it."""

        def find() -> str | None:
            lines = self.process_log(name).read_text(errors="replace").splitlines()
            return next((line for line in lines if text in line), None)

        return wait_until(find, timeout=timeout, what=f"{text!r} in the {name} log", check=self.check)

    @staticmethod
    def _airflow(*args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _healthy(self) -> bool:
        try:
            health = self.api("GET", "/monitor/health")
        except httpx.HTTPError:
            return False
        components = ["metadatabase", "scheduler", "dag_processor"]
        if self._with_triggerer:
            components.append("triggerer")
        return all((health.get(c) or {}).get("status") == "healthy" for c in components)

    def _dags_parsed(self) -> bool:
        errors = self.api("GET", "/importErrors", params={"limit": 1000})["import_errors"]
        if errors:
            details = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
            raise RuntimeError(f"DAG import errors:\n{details}")
        dags = self._all_dags()
        if self._dag_ids is not None:
            return self._dag_ids <= {d["dag_id"] for d in dags}
        parsed = {Path(d["fileloc"]).resolve() for d in dags}
        return all(path in parsed for path in self._dag_files())

    def _all_dags(self) -> list[dict[str, Any]]:
        """Every DAG the API lists, page by page (it caps a page at ``maximum_page_limit``, 100)."""
        dags: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", "/dags", params={"limit": 100, "offset": len(dags)})
            dags.extend(page["dags"])
            if not page["dags"] or len(dags) >= int(page.get("total_entries", 0)):
                return dags

    def _dag_files(self) -> list[Path]:
        """Files Airflow's safe mode parses: ``*.py`` mentioning both ``airflow`` and ``dag``."""
        return [
            path.resolve()
            for path in sorted(self.dags_folder.rglob("*.py"))
            if b"airflow" in (text := path.read_bytes().lower()) and b"dag" in text
        ]

    def task_processes(
        self,
        dag_id: str,
        task_id: str,
        run_id: str | None = None,
        map_index: int = -1,
        timeout: float = 30.0,
    ) -> TaskProcesses:
        """
        Find the supervisor of a running task instance and its task process.

        Waits (bounded) until the task instance is ``running`` and its task process has renamed
        itself, i.e. has received its start-up message.

        :param run_id: the DAG run; None for the newest running instance of ``task_id``.
        """
        if run_id is None:
            ti = wait_until(
                lambda: self.running_task_instance(dag_id, task_id),
                timeout=timeout,
                what=f"a running {dag_id}.{task_id}",
                check=self.check,
            )
        else:
            ti = self.wait_for_ti_state(dag_id, run_id, task_id, {"running"}, timeout, map_index)
        task_title = f"airflow worker -- {ti['id']}"

        def find() -> TaskProcesses | None:
            for host in list(self._processes.values()):  # the scheduler's and Celery's workers
                for proc in _descendants(host.pid):
                    if _title(proc) == task_title and (parent := _parent_pid(proc)) not in (0, host.pid):
                        return TaskProcesses(supervisor_pid=parent, task_pid=proc.pid)
            return None

        what = f"the processes of task instance {ti['id']}"
        return wait_until(find, timeout=timeout, what=what, check=self.check)

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """The log files (one per try, ``attempt=<n>.log``) of a task instance."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(folder.rglob("attempt=*.log"))

    def wait_for_log_line(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        text: str,
        timeout: float,
        try_number: int | None = None,
    ) -> str:
        """
        Wait until a line of the task instance's log contains ``text``; return that line.

        :param try_number: look only in that try's log; in every try's when None.
        """
        name = f"attempt={try_number}.log" if try_number is not None else None

        def find() -> str | None:
            for path in self.task_log_files(dag_id, run_id, task_id):
                if name is None or path.name == name:
                    for line in path.read_text(errors="replace").splitlines():
                        if text in line:
                            return line
            return None

        what = f"log line {text!r} of {task_id} in {run_id}"
        return wait_until(find, timeout=timeout, what=what, check=self.check)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (neither gone nor a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _title(proc: psutil.Process) -> str:
    """The process title (setproctitle pads the command line with empty arguments)."""
    try:
        return " ".join(proc.cmdline()).strip()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _parent_pid(proc: psutil.Process) -> int:
    try:
        return int(proc.ppid())
    except psutil.NoSuchProcess:
        return 0


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


@contextlib.contextmanager
def airflow_cluster(
    tmp_path_factory: pytest.TempPathFactory, dags_folder: Path, **kwargs: Any
) -> Iterator[AirflowCluster]:
    """
    A started :class:`AirflowCluster` whose home is under pytest's temporary directory (kept).

    Wrap it in a fixture::

        @pytest.fixture(scope="module")
        def cluster(tmp_path_factory):
            with airflow_cluster(tmp_path_factory, DAGS) as started:
                yield started
    """
    home = tmp_path_factory.mktemp("airflow-home")
    with AirflowCluster(dags_folder, home=home, **kwargs) as cluster:
        yield cluster
