"""
A real Airflow 3 deployment on this machine, for system tests and the demo.

:class:`AirflowCluster` runs ``airflow api-server``, ``airflow scheduler`` (LocalExecutor),
``airflow dag-processor`` and optionally ``airflow triggerer`` as separate processes against a
throw-away ``AIRFLOW_HOME`` with a sqlite database (LocalExecutor works with sqlite in 3.3.2, no
setting needed; Airflow opens it in WAL mode), drives them through the public REST API
(``/api/v2``) and finds the processes of a running task instance, so that a test can disrupt them
the way a worker shutdown or a crash does.

Authentication: ``[core] simple_auth_manager_all_admins = True``. The SimpleAuthManager then adds
an admin JWT to every request itself (``SimpleAllAdminMiddleware``): REST calls need no
credentials and no ``/auth/token`` round trip.

Finding a task's processes: a LocalExecutor worker *is* the supervisor of the task it runs; its
process title is then ``airflow worker -- LocalExecutor: <ti id>``. It forks the task process,
which titles itself ``airflow worker -- <ti id>`` once it got its start-up message. The task
instance ``id`` comes from the REST API.

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
from dataclasses import dataclass
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
    from collections.abc import Iterator, Mapping

    import pytest

__all__ = [
    "FAST_SETTINGS",
    "AirflowCluster",
    "ClusterProcessDied",
    "Restart",
    "TaskProcesses",
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
    """The supervisor (a LocalExecutor worker) of a running task instance, and its task process."""

    supervisor_pid: int
    task_pid: int

    def signal_supervisor(self, sig: int) -> None:
        """Send ``sig`` to the supervisor, as a worker shutdown (e.g. a pod's SIGTERM) does."""
        os.kill(self.supervisor_pid, sig)

    def signal_task(self, sig: int) -> None:
        """Send ``sig`` to the task process only."""
        os.kill(self.task_pid, sig)

    def kill_both(self) -> None:
        """SIGKILL the supervisor, then the task process: a crash, nobody reports anything."""
        for pid in (self.supervisor_pid, self.task_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

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


#: Process name -> the component of ``/monitor/health`` whose heartbeat says it is up.
_HEALTH_COMPONENT = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


class AirflowCluster(ClusterRestApi):
    """
    A running Airflow deployment: api-server, scheduler (LocalExecutor), dag-processor, triggerer.

    REST helpers (``trigger``, ``wait_for_ti_state``, ``mark_ti``...) come from
    :class:`~airflow_resumable.testing._cluster_rest.ClusterRestApi`.

    :param dags_folder: the DAG files to serve.
    :param home: ``AIRFLOW_HOME`` to create; a temporary directory (removed on stop) when None.
    :param env: extra environment for every process, applied last (may override the defaults).
    :param executor_parallelism: LocalExecutor worker processes (``[core] parallelism``).
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
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
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
        dags = self.api("GET", "/dags", params={"limit": 1000})["dags"]
        if self._dag_ids is not None:
            return self._dag_ids <= {d["dag_id"] for d in dags}
        parsed = {Path(d["fileloc"]).resolve() for d in dags}
        return all(path in parsed for path in self._dag_files())

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
            for proc in _descendants(self._processes["scheduler"].pid):
                title = _title(proc)
                if "LocalExecutor" in title and title.endswith(f": {ti['id']}"):
                    for child in _children(proc):
                        if _title(child) == task_title:
                            return TaskProcesses(supervisor_pid=proc.pid, task_pid=child.pid)
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


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return list(proc.children())
    except psutil.NoSuchProcess:
        return []


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
