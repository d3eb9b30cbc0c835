"""
The contract kit: one pytest suite that proves an operator keeps the resumable contract.

Subclass :class:`ResumableOperatorContract` in a test module, name the operator class, say how to
build its arguments, and hand the kit a :class:`CloudDriver` for your fake service::

    class TestMyOperatorContract(ResumableOperatorContract):
        operator_class = MyResumableOperator

        @pytest.fixture
        def cloud(self):
            return MyFakeServiceDriver(...)

        def operator_kwargs(self, cloud, spec_marker):
            return {"job_name": spec_marker, "conn_id": "fake", "poll_interval": 0.01}

Each scenario runs a real ``dag.test()`` (real task runner, real ``task_state_store``, real
retries) against the fake; faults are injected around the operator's own hooks: a worker crash
right after the service accepted the job, a crash while polling, a failing state-store write. The
process needs a migrated Airflow database: see :mod:`airflow_resumable.testing.airflow_env`.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from unittest import mock

from tenacity import wait_none

from airflow_resumable.record import RECORD_KEY
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.airflow_env import DagRunOutcome, read_ledger, read_task_state, run_dag

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import JsonValue

__all__ = ["CloudDriver", "ResumableOperatorContract", "ScenarioProbe", "SimulatedWorkerCrash"]

SPEC_VARIABLE = "AIRFLOW_RESUMABLE_CONTRACT_SPEC"
#: A templated value for ``operator_kwargs``: it renders to the value of an Airflow Variable the kit
#: changes between tries to simulate a user who fixed the job's inputs.
SPEC_TEMPLATE = "{{ var.value.airflow_resumable_contract_spec }}"
_MAX_POLLS = 500


class SimulatedWorkerCrash(Exception):
    """Raised by the kit inside a task to end a try the way a dying worker would."""


class CloudDriver(Protocol):
    """What the kit needs from a fake service: counts and control of remote jobs."""

    def submitted_ids(self) -> list[JsonValue]:
        """Ids of the jobs the service actually created, in order (duplicates show up here)."""

    def cancelled_ids(self) -> list[JsonValue]:
        """Ids of jobs the service was asked to cancel."""

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        """End a job with success or failure."""

    def expire(self, external_id: JsonValue) -> None:
        """Forget a job, as a service whose run history expired would."""


PollHook = Callable[["ScenarioProbe", int, Any, int], None]


@dataclass
class ScenarioProbe:
    """
    Instrumentation of one operator class during one scenario.

    ``on_poll(probe, try_number, external_id, poll_index)`` runs before each status call made
    while polling (not the ones the attempt-start decision makes) and may finish the job or raise
    :class:`SimulatedWorkerCrash`; ``crash_after_submit`` lists the tries whose first submission is
    followed by a crash before the id is stored.
    """

    cloud: CloudDriver
    on_poll: PollHook
    crash_after_submit: set[int] = field(default_factory=set)
    fail_record_write_once: bool = False
    polled: dict[int, list[JsonValue]] = field(default_factory=lambda: defaultdict(list))
    submitted: dict[int, list[JsonValue]] = field(default_factory=lambda: defaultdict(list))
    returned: list[Any] = field(default_factory=list)
    job_results: list[Any] = field(default_factory=list)
    failed_writes: int = 0
    executions: int = 0
    _local: threading.local = field(default_factory=threading.local)

    @property
    def try_number(self) -> int:
        """The try number of the task instance running in this thread."""
        return int(getattr(self._local, "try_number", 0))

    @property
    def attempt(self) -> int:
        """How many times ``execute`` has started in this scenario (reschedules included)."""
        return self.executions

    @property
    def context(self) -> Any:
        """The Airflow context of the try running in this thread."""
        return self._local.context

    @property
    def operator(self) -> Any:
        """The operator instance running in this thread."""
        return self._local.operator

    @contextmanager
    def install(self, operator_class: type) -> Iterator[None]:
        """Wrap the operator's hooks for the duration of a ``with`` block."""
        probe = self
        originals = {name: getattr(operator_class, name) for name in _WRAPPED}

        def execute(op: Any, context: Any) -> Any:
            probe.executions += 1
            probe._local.try_number = context["ti"].try_number
            probe._local.context = context
            probe._local.operator = op
            probe._local.polling = False
            result = originals["execute"](op, context)
            probe.returned.append(result)
            return result

        def submit_job(op: Any, context: Any) -> Any:
            external_id = originals["submit_job"](op, context)
            probe.submitted[probe.try_number].append(external_id)
            if probe.try_number in probe.crash_after_submit:
                probe.crash_after_submit.discard(probe.try_number)
                raise SimulatedWorkerCrash("worker died after the service accepted the job")
            return external_id

        def poll_until_complete(op: Any, external_id: Any, context: Any) -> Any:
            probe._local.polling = True
            probe._local.polls = 0
            try:
                return originals["poll_until_complete"](op, external_id, context)
            finally:
                probe._local.polling = False

        def get_job_status(op: Any, external_id: Any, context: Any) -> Any:
            if getattr(probe._local, "polling", False):
                index = probe._local.polls
                probe._local.polls += 1
                if index >= _MAX_POLLS:
                    raise RuntimeError("the scenario never ended the job it was polling")
                if index == 0:
                    probe.polled[probe.try_number].append(external_id)
                probe.on_poll(probe, probe.try_number, external_id, index)
            return originals["get_job_status"](op, external_id, context)

        def get_job_result(op: Any, external_id: Any, context: Any) -> Any:
            result = originals["get_job_result"](op, external_id, context)
            probe.job_results.append(result)
            return result

        replacements = {
            "execute": execute,
            "submit_job": submit_job,
            "poll_until_complete": poll_until_complete,
            "get_job_status": get_job_status,
            "get_job_result": get_job_result,
        }
        with _patched(operator_class, replacements, probe):
            yield


_WRAPPED = ("execute", "submit_job", "poll_until_complete", "get_job_status", "get_job_result")


@contextmanager
def _patched(operator_class: type, replacements: dict[str, Any], probe: ScenarioProbe) -> Iterator[None]:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor

    original_set = TaskStateStoreAccessor.set

    def flaky_set(store: Any, key: str, value: Any, **kwargs: Any) -> None:
        is_id_write = key == RECORD_KEY and isinstance(value, dict) and value.get("phase") == "submitted"
        if probe.fail_record_write_once and is_id_write:
            probe.fail_record_write_once = False
            probe.failed_writes += 1
            raise ConnectionError("injected: the API server refused the state-store write")
        original_set(store, key, value, **kwargs)

    with ExitStack() as stack:
        for name, replacement in replacements.items():
            stack.enter_context(mock.patch.object(operator_class, name, replacement))
        stack.enter_context(mock.patch.object(TaskStateStoreAccessor, "set", flaky_set))
        yield


def finish_on_first_poll(succeeded: bool = True, *, on_try: int | None = None) -> PollHook:
    """A poll hook that ends the polled job at the first poll (of ``on_try``, or of any try)."""

    def hook(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
        if index == 0 and (on_try is None or try_number == on_try):
            probe.cloud.finish(external_id, succeeded=succeeded)

    return hook


def _sigterm_self() -> None:
    """Deliver a real SIGTERM to this process: Airflow's task-runner handler calls ``on_kill``."""
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


def _mark_task_instance(probe: ScenarioProbe, state: str) -> None:
    """Change the task instance's state on the server, as a user's "mark failed" does."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    ti = probe.context["ti"]
    with create_session() as session:
        session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.dag_id == ti.dag_id,
                TaskInstance.run_id == ti.run_id,
                TaskInstance.task_id == ti.task_id,
                TaskInstance.map_index == ti.map_index,
            )
            .values(state=state)
        )


class InterruptionContract:
    """
    Stop-signal scenarios, with real SIGTERMs to the process running ``dag.test()``.

    Mixed into :class:`ResumableOperatorContract`; kept apart to keep each class readable.
    """

    if TYPE_CHECKING:
        operator_class: ClassVar[Any]

        def _run(self, cloud: CloudDriver, probe: ScenarioProbe, **overrides: Any) -> DagRunOutcome: ...
        @staticmethod
        def _record(outcome: DagRunOutcome, map_index: int = -1) -> dict[str, Any]: ...

    def test_worker_shutdown_is_a_checkpoint(self, cloud: CloudDriver) -> None:
        """SIGTERM while the server holds the try running: job kept, reschedule, same try reconnects."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if probe.attempt == 1 and index == 0:
                _sigterm_self()
            elif probe.attempt > 1:
                probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1, "a checkpoint must not consume a retry"
        assert probe.executions == 2
        assert len(cloud.submitted_ids()) == 1 and cloud.cancelled_ids() == []
        record = self._record(outcome)
        assert record["resumes"] == 1 and record["interruption"]["signal"] == "SIGTERM"

    def test_three_shutdowns_in_a_row(self, cloud: CloudDriver) -> None:
        """Three consecutive worker shutdowns within max_resumes=3: one job, no retry consumed."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if probe.attempt <= 3 and index == 0:
                _sigterm_self()
            elif probe.attempt > 3:
                probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1
        assert probe.executions == 4 and len(cloud.submitted_ids()) == 1
        assert self._record(outcome)["resumes"] == 3

    def test_user_stop_cancels(self, cloud: CloudDriver) -> None:
        """SIGTERM after the server marked the try failed: the job is cancelled and not resubmitted."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if index == 0:
                _mark_task_instance(probe, "failed")
                _sigterm_self()

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "failed"
        assert len(cloud.submitted_ids()) == 1
        assert cloud.cancelled_ids() == cloud.submitted_ids()
        assert probe.executions == 1

    def test_execution_timeout_cancels(self, cloud: CloudDriver) -> None:
        """execution_timeout while the job runs: the job is cancelled and the task fails."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if index == 0:
                threading.Event().wait(20)  # a status call that outlives the timeout (SIGALRM ends it)

        probe = ScenarioProbe(cloud, on_poll)
        # 3 s, not 1 s: a full garbage collection of a big test process alone can take a second.
        outcome = self._run(cloud, probe, retries=0, execution_timeout=timedelta(seconds=3))
        assert outcome.task("job").state == "failed"
        assert len(cloud.submitted_ids()) == 1
        assert cloud.cancelled_ids() == cloud.submitted_ids()


class ResumableOperatorContract(InterruptionContract):
    """
    The resumable contract as a pytest suite. Subclass it; see the module docstring.

    Required from the subclass: ``operator_class``, a ``cloud`` fixture returning a
    :class:`CloudDriver`, and :meth:`operator_kwargs`.
    """

    operator_class: ClassVar[Any]
    #: Whether the service deduplicates on the token; False requires ``find_job``.
    retries: ClassVar[int] = 1

    def operator_kwargs(self, cloud: CloudDriver, spec_marker: str) -> dict[str, Any]:
        """
        The operator's own arguments. ``spec_marker`` must land in a templated field that is part
        of the job spec (a name, a parameter), so that changing it changes the fingerprint.
        """
        raise NotImplementedError

    # --------------------------------------------------------------------------- machinery
    def _run(
        self,
        cloud: CloudDriver,
        probe: ScenarioProbe,
        *,
        map_markers: list[str] | None = None,
        spec_value: str = "v1",
        **overrides: Any,
    ) -> DagRunOutcome:
        from airflow.sdk import DAG

        dag_id = f"contract_{type(self).__name__}_{uuid.uuid4().hex[:8]}"
        common = {
            "retries": self.retries,
            "retry_delay": timedelta(0),
            "execution_timeout": timedelta(seconds=60),
            "cloud_retry": RetryPolicy(attempts=3, wait=wait_none()),
            "state_store_retry": RetryPolicy(attempts=1, wait=wait_none()),
            "resume_delay": timedelta(0),
            "max_resumes": 3,
            **overrides,
        }
        os.environ[f"AIRFLOW_VAR_{SPEC_VARIABLE}"] = spec_value
        with DAG(dag_id, schedule=None) as dag:
            if map_markers is None:
                self.operator_class(task_id="job", **common, **self.operator_kwargs(cloud, SPEC_TEMPLATE))
            else:
                per_index = [self.operator_kwargs(cloud, marker) for marker in map_markers]
                shared = {k: v for k, v in per_index[0].items() if all(p.get(k) == v for p in per_index)}
                self.operator_class.partial(task_id="job", **common, **shared).expand_kwargs(
                    [{k: v for k, v in p.items() if k not in shared} for p in per_index]
                )
        with probe.install(self.operator_class):
            return run_dag(dag)

    @staticmethod
    def _record(outcome: DagRunOutcome, map_index: int = -1) -> dict[str, Any]:
        return dict(read_task_state(outcome.dag_id, outcome.run_id, "job", RECORD_KEY, map_index) or {})

    # --------------------------------------------------------------------------- scenarios
    def test_fresh_submit(self, cloud: CloudDriver) -> None:
        """A first try submits exactly one job, waits for it, and returns get_job_result's value."""
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert cloud.cancelled_ids() == []
        assert probe.returned == probe.job_results != []
        record = self._record(outcome)
        assert record["phase"] == "completed"
        assert record["generation"] == 1
        assert record["external_id"] == cloud.submitted_ids()[0]

    def test_reconnect_after_worker_crash(self, cloud: CloudDriver) -> None:
        """A retry after a crash while polling reconnects to the same job instead of submitting."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                raise SimulatedWorkerCrash("worker died while polling")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 2
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == probe.polled[1] == [cloud.submitted_ids()[0]]
        assert probe.submitted[2] == []
        assert probe.returned == probe.job_results[-1:]

    def test_adopt_succeeded_job(self, cloud: CloudDriver) -> None:
        """A retry that finds its job already succeeded returns get_job_result without polling."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=True)
            raise SimulatedWorkerCrash("worker died just as the job finished")

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1
        assert 2 not in probe.polled
        assert probe.returned == probe.job_results != []

    def test_resubmit_after_failure(self, cloud: CloudDriver) -> None:
        """A retry after the job failed submits one fresh job under the next generation and token."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=try_number > 1)

        tokens: list[str] = []
        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 2
        submitted = cloud.submitted_ids()
        assert len(submitted) == 2 and submitted[0] != submitted[1]
        record = self._record(outcome)
        tokens.append(record["token"])
        assert record["generation"] == 2
        assert record["external_id"] == submitted[1]

    def test_crash_between_submit_and_persist(self, cloud: CloudDriver) -> None:
        """A crash after the service accepted the job but before its id was stored causes no duplicate."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 2
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == [cloud.submitted_ids()[0]]

    def test_state_store_write_fails_once(self, cloud: CloudDriver) -> None:
        """A failed write of the job id is survivable: the same try finishes, one job, no retry used."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), fail_record_write_once=True)
        outcome = self._run(cloud, probe)
        assert probe.failed_writes == 1
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1

    def test_spec_change_is_not_adopted(self, cloud: CloudDriver) -> None:
        """When the rendered spec changes between tries, the old job is cancelled, not adopted."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                os.environ[f"AIRFLOW_VAR_{SPEC_VARIABLE}"] = "v2"  # the user fixed an input
                raise SimulatedWorkerCrash("worker died while polling")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        submitted = cloud.submitted_ids()
        assert len(submitted) == 2
        assert probe.polled[2] == [submitted[1]]
        assert self._record(outcome)["generation"] == 2
        assert cloud.cancelled_ids() == [submitted[0]], "the superseded job must be cancelled"

    def test_wiped_state_store_reconnects(self, cloud: CloudDriver) -> None:
        """
        A clear that deletes the task state store (apache/airflow#72100) causes no second job.

        The ledger of jobs in flight still names the job; the next try reconnects to it, and the
        ledger entry is gone once the task has the job's result.
        """

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                probe.context["task_state_store"].clear()
                raise SimulatedWorkerCrash("the state rows were deleted, then the worker died")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1, "a second job after the state store was wiped"
        assert probe.polled[2] == [cloud.submitted_ids()[0]]
        assert cloud.cancelled_ids() == []
        assert read_ledger(outcome.dag_id, outcome.run_id, "job") is None

    def test_custodian_cancels_with_the_ledgers_recipe(self, cloud: CloudDriver) -> None:
        """
        The custodian cancels a job no try polls, from the ledger entry alone.

        While try 1 polls, the kit reads the task's ledger entry (what the custodian reads: an
        Airflow Variable), checks that it is JSON with no spec in it, and runs the registered
        canceller its recipe names, as the custodian would after a user's stop. The job must be
        cancelled (the try then fails on it, which is what a stopped task's job is for).
        """
        import json

        from airflow_resumable.custodian import run_canceller

        seen: dict[str, Any] = {}

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if index != 0:
                return
            ti = probe.context["ti"]
            entry = read_ledger(ti.dag_id, ti.run_id, ti.task_id)
            seen["entry"] = entry
            if entry is not None and isinstance(entry.get("cancel"), dict):
                recipe = entry["cancel"]
                run_canceller((recipe["with"], recipe["args"]), entry["external_id"])

        probe = ScenarioProbe(cloud, on_poll)
        self._run(cloud, probe, retries=0, spec_value="spec-only-value-4f2a")
        entry = seen.get("entry")
        assert entry is not None, "the job in flight must be in the ledger while it is polled"
        assert entry["external_id"] == cloud.submitted_ids()[0]
        assert "spec-only-value-4f2a" not in json.dumps(entry), "the ledger must hold no part of the spec"
        if not isinstance(entry.get("cancel"), dict):
            raise AssertionError(
                f"{self.operator_class.__name__} gives the custodian no cancel_recipe: a user's stop "
                f"while no try polls would leave its job running"
            )
        assert cloud.cancelled_ids() == [cloud.submitted_ids()[0]]

    def test_adopts_stock_operator_id(self, cloud: CloudDriver) -> None:
        """An id stored by the stock operator's code path (the core mixin) is adopted, not resubmitted."""
        from airflow.sdk import ResumableJobMixin as CoreMixin

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                raise SimulatedWorkerCrash("worker died while the stock operator polled")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        stock_path = CoreMixin.execute_resumable
        ours = self.operator_class.execute_resumable

        def first_try_as_stock(op: Any, context: Any) -> Any:
            if context["ti"].try_number == 1:
                return stock_path(op, context)
            return ours(op, context)

        with mock.patch.object(self.operator_class, "execute_resumable", first_try_as_stock):
            outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == [cloud.submitted_ids()[0]]
        assert self._record(outcome)["external_id"] == cloud.submitted_ids()[0]

    def test_corrupt_record_with_recoverable_id(self, cloud: CloudDriver) -> None:
        """A damaged record next to a valid stored id is reported and the job is still reconnected."""
        _overwrite_record_on_first_poll = _record_vandal({"schema": "something-else", "x": 1})
        probe = ScenarioProbe(cloud, _overwrite_record_on_first_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == [cloud.submitted_ids()[0]]

    def test_corrupt_record_without_id_fails_safely(self, cloud: CloudDriver) -> None:
        """A damaged record with no id to recover fails the task at once: no duplicate, no retry loop."""
        probe = ScenarioProbe(cloud, _record_vandal("garbage", drop_bare_id=True))
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "failed"
        assert outcome.task("job").try_number == 2
        assert len(cloud.submitted_ids()) == 1
        assert 2 not in probe.submitted

    def test_mapped_task_isolation(self, cloud: CloudDriver) -> None:
        """Each map index keeps its own record and token and reconnects to its own job."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                raise SimulatedWorkerCrash("worker died while polling")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe, map_markers=["a", "b", "c"])
        states = {index: outcome.task("job", index).state for index in range(3)}
        assert states == {0: "success", 1: "success", 2: "success"}
        submitted = cloud.submitted_ids()
        assert len(submitted) == 3 and len(set(map(str, submitted))) == 3
        records = [self._record(outcome, index) for index in range(3)]
        assert len({r["token"] for r in records}) == 3
        assert sorted(map(str, (r["external_id"] for r in records))) == sorted(map(str, submitted))


def _record_vandal(value: Any, *, drop_bare_id: bool = False) -> PollHook:
    """A poll hook that damages the stored record during try 1, then lets try 2 finish the job."""

    def hook(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
        if try_number == 1:
            store = probe.context["task_state_store"]
            store.set(RECORD_KEY, value)
            if drop_bare_id:
                store.delete(probe.operator.external_id_key)
            raise SimulatedWorkerCrash("worker died after the record was damaged")
        probe.cloud.finish(external_id, succeeded=True)

    return hook
