"""
Chaos cases of a CeleryExecutor deployment: what happens to the workers themselves.

:class:`CeleryCaseRun` runs the task-level cases of :class:`~_chaos_cases.CaseRun` unchanged (on
the deployment's default worker) and adds the worker-level ones. Each worker-level case runs its
task on a queue of its own (the DAG shape ``_worker_<kind>``, queue = DAG id) served by a worker
it starts for itself, so it can shut that worker down without touching another case's tasks;
after the fault it starts a replacement, where the task resumes.

============================  ========================================================================
case                          fault
============================  ========================================================================
worker_warm_bridged           SIGTERM to the main ``airflow celery worker`` (Celery's warm shutdown),
                              with the bridge (``celery_config_options =
                              airflow_resumable.celery.CELERY_CONFIG``): the resumable task
                              checkpoints, a plain ``bystander`` task on the same worker is left to
                              finish; once the test releases it, the worker exits
worker_warm_plain             the same without the bridge: nothing reaches the task; after the grace
                              the worker's tree is killed, the heartbeat timeout fails the try and
                              the retry reconnects
worker_cold                   SIGQUIT to the main worker (Celery's cold shutdown: it terminates its
                              pool processes, whose supervisors forward the SIGTERM to the tasks)
worker_crash                  SIGKILL to the worker and every descendant at once (a lost node)
============================  ========================================================================
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from _chaos_cases import CaseRun

from airflow_resumable.testing.cluster import CeleryWorker, WorkerStop

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from _chaos_cases import ChaosContext
    from _chaos_clouds import Job

#: ``[celery] celery_config_options`` that installs the warm-shutdown bridge.
BRIDGE_ENV = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_resumable.celery.CELERY_CONFIG"}
#: Worker-level case -> its DAG shape (``dags/chaos_resumable.py``).
WORKER_CASES = {
    "worker_warm_bridged": "_worker_warm_bridged",
    "worker_warm_plain": "_worker_warm_plain",
    "worker_cold": "_worker_cold",
    "worker_crash": "_worker_crash",
}
#: Seconds a deployment tool waits after a warm SIGTERM before it kills the worker's tree (Docker's
#: default is 10, the Helm chart's 600; short here so the unbridged case ends soon).
WARM_GRACE = 10.0
#: The same for a shutdown that should end by itself (bridged warm, cold): a bound, not a wait.
BOUNDED_GRACE = 60.0
#: What a try logs when it checkpoints (``_stopping``).
CHECKPOINT_LINE = '"kind":"worker_shutdown"'


class _Background:
    """Run ``fn`` in a thread; :meth:`result` waits (bounded) and re-raises what it raised."""

    def __init__(self, fn: Callable[[], WorkerStop]) -> None:
        self._result: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], WorkerStop]) -> None:
        try:
            self._result.append(fn())
        except BaseException as error:  # handed to result()
            self._result.append(error)

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self, timeout: float) -> WorkerStop:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"still running after {timeout:.0f}s")
        if isinstance(self._result[0], BaseException):
            raise self._result[0]
        stop: WorkerStop = self._result[0]
        return stop


class CeleryCaseRun(CaseRun):
    """A chaos case on a CeleryExecutor deployment (worker-level cases added)."""

    ledger_checked = frozenset({*WORKER_CASES, "sigterm", "sigkill", "lost_submit_response"})

    def __init__(self, context: ChaosContext, operator: str, case: str) -> None:
        super().__init__(context, operator, case)
        self.worker: CeleryWorker | None = None
        if case in WORKER_CASES:
            self.dag_id = f"chaos_{operator}{WORKER_CASES[case]}"
            env = {} if case == "worker_warm_plain" else BRIDGE_ENV
            self.worker = CeleryWorker(f"worker-{self.dag_id}", concurrency=2, queues=(self.dag_id,), env=env)

    @property
    def _bystander_file(self) -> Path:
        return self.ctx.fault_dir / f"{self.tag}.bystander"

    def extra_conf(self) -> dict[str, Any]:
        return {"bystander": str(self._bystander_file)}

    # ------------------------------------------------------------------ the worker of a case
    def _start_worker(self) -> None:
        assert self.worker is not None
        self.cluster.start_celery_worker(self.worker, timeout=120)

    def _stop_worker(self) -> None:
        """After the case: its worker is not needed any more (bounded; a stuck one is killed)."""
        if self.worker is not None and self.cluster.celery_worker_pid(self.worker.name) is not None:
            self.cluster.shut_down_celery_worker(self.worker.name, signal.SIGTERM, grace=15)

    def _shut_down(self, sig: int, grace: float) -> _Background:
        assert self.worker is not None
        name = self.worker.name
        return _Background(lambda: self.cluster.shut_down_celery_worker(name, sig, grace=grace))

    def _wait_checkpointed(self, since: float) -> None:
        """Wait (bounded) for the try to end ``up_for_reschedule``; figure ``checkpoint_s``."""
        self.wait(
            lambda: (
                self.cluster.task_instance(self.dag_id, self.run_id, "job")["state"] == "up_for_reschedule"
            ),
            30,
            "the checkpoint (up_for_reschedule)",
            step=0.1,
        )
        self.figures["checkpoint_s"] = round(time.monotonic() - since, 1)

    def _retry_on_a_new_worker(self, job: Job, lost_at: float) -> None:
        """
        After a worker was lost with its try: start a new one, wait for the retry (after the
        heartbeat timeout) to poll ``job`` again, let it finish. Figure ``unwatched_s``.
        """
        self._start_worker()
        read_at = self.wait_polling(job, 2, timeout=self.cluster.heartbeat_timeout + 120)
        self.figures["unwatched_s"] = round(read_at - lost_at, 1)
        self.view.finish(job)

    _before_worker_warm_bridged = _start_worker
    _before_worker_warm_plain = _start_worker
    _before_worker_cold = _start_worker
    _before_worker_crash = _start_worker
    _after_worker_warm_bridged = _stop_worker
    _after_worker_warm_plain = _stop_worker
    _after_worker_cold = _stop_worker
    _after_worker_crash = _stop_worker

    # ------------------------------------------------------------------ the cases
    def _worker_warm_bridged(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        self.cluster.task_processes(self.dag_id, "bystander", self.run_id, timeout=60)
        shutdown_at = time.monotonic()
        shutdown = self._shut_down(signal.SIGTERM, BOUNDED_GRACE)
        self._wait_checkpointed(shutdown_at)
        self.figures["worker_waits_for_bystander"] = shutdown.running()
        self.figures["bystander_signalled"] = self._bystander_file.with_name(
            f"{self._bystander_file.name}.signalled"
        ).exists()
        released_at = time.monotonic()
        self._bystander_file.touch()
        stop = shutdown.result(BOUNDED_GRACE)
        self.figures["worker_exit_after_release_s"] = round(time.monotonic() - released_at, 1)
        self.figures["worker_killed"] = stop.killed
        bystander = self.cluster.wait_for_ti_state(self.dag_id, self.run_id, "bystander", {"success"}, 60)
        self.figures["bystander"] = f"{bystander['state']}/try {bystander['try_number']}"
        self._start_worker()
        self.reconnect(job, 2, shutdown_at)

    def _worker_warm_plain(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        shutdown_at = time.monotonic()
        stop = self._shut_down(signal.SIGTERM, WARM_GRACE).result(WARM_GRACE + 30)
        self.figures["worker_killed"] = stop.killed
        self.figures["checkpointed"] = bool(self.tries_logging(CHECKPOINT_LINE))
        self._retry_on_a_new_worker(job, shutdown_at)

    def _worker_cold(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        shutdown_at = time.monotonic()
        shutdown = self._shut_down(signal.SIGQUIT, BOUNDED_GRACE)
        self._wait_checkpointed(shutdown_at)
        stop = shutdown.result(BOUNDED_GRACE + 30)
        self.figures["worker_exit_s"] = stop.stopped_s
        self.figures["worker_killed"] = stop.killed
        self.figures["checkpointed"] = bool(self.tries_logging(CHECKPOINT_LINE))
        self._start_worker()
        self.reconnect(job, 2, shutdown_at)

    def _worker_crash(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        crashed_at = time.monotonic()
        assert self.worker is not None
        self.cluster.crash_celery_worker(self.worker.name)
        self._retry_on_a_new_worker(job, crashed_at)
