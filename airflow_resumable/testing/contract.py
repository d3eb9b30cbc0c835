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
right after the service accepted the job, a crash while polling, a failing state-store write, a
namesake job submitted with another token, a job the service forgot. The process needs a migrated
Airflow database: see :mod:`airflow_resumable.testing.airflow_env`.

The kit fails fast rather than hang: before a scenario it checks that ``execute``,
``execute_resumable`` and ``poll_until_complete`` come from a resumable class (not from a stock
operator listed first in the bases), every try has ``scenario_timeout`` (30 s) as its
``execution_timeout``, and a scenario whose submitted job sees no status call through
``get_job_status`` for ``stall_timeout`` (10 s) is ended: the kit fails its jobs in the fake and
reports the stall. Its assertions show their values under pytest (the package's pytest plugin
registers the kit for assertion rewriting).

The clouds as they really behave: before each scenario the kit hands the driver its
:attr:`ResumableOperatorContract.realism` (a short visibility lag, throttling, pages of 2) through
``set_realism`` (:class:`RealisticCloudDriver`), and switches it off after. The realism scenarios
(a young job not visible yet, throttled status reads, a lookup past the first page, and the
proof cases under a lag of 0 and of :data:`PROOF_LAG` seconds) fail for a driver without
``set_realism``: a fake that answers at once is kinder than the cloud it stands for. Each proof
case prints ``proof <Operator> <case> lag=<s>: jobs=<n> tries=<n> final=<state> ...`` (``pytest
-s``; pytest's terminal summary lists them too).
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from unittest import mock

import pytest
from tenacity import wait_none

from airflow_resumable.record import RECORD_KEY
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing._contract_checks import (
    ContractDefect,
    fingerprint_misses,
    stock_classes,
    stock_tripwires,
)
from airflow_resumable.testing._contract_interruptions import InterruptionContract
from airflow_resumable.testing._contract_probe import (
    SPEC_TEMPLATE,
    SPEC_VARIABLE,
    CloudDriver,
    LossyCloudDriver,
    MisleadingCloudDriver,
    PollHook,
    RealisticCloudDriver,
    ScenarioProbe,
    SimulatedWorkerCrash,
    ThrottlingCloudDriver,
    _StallWatch,
    check_operator_class,
    finish_on_first_poll,
)
from airflow_resumable.testing._contract_proof import PROOF_LAG, PROOF_LAGS, ProofContract, realism_of
from airflow_resumable.testing._contract_stock import StockParityContract
from airflow_resumable.testing.airflow_env import DagRunOutcome, read_ledger, read_task_state, run_dag
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from pydantic import JsonValue


__all__ = [
    "PROOF_LAG",
    "PROOF_LAGS",
    "SPEC_TEMPLATE",
    "SPEC_VARIABLE",
    "CloudDriver",
    "ContractDefect",
    "LossyCloudDriver",
    "MisleadingCloudDriver",
    "PollHook",
    "RealisticCloudDriver",
    "ResumableOperatorContract",
    "ScenarioProbe",
    "SimulatedWorkerCrash",
    "ThrottlingCloudDriver",
    "check_operator_class",
    "finish_on_first_poll",
]


class ResumableOperatorContract(StockParityContract, ProofContract, InterruptionContract):
    """
    The resumable contract as a pytest suite. Subclass it; see the module docstring.

    Required from the subclass: ``operator_class``, a ``cloud`` fixture returning a
    :class:`CloudDriver`, and :meth:`operator_kwargs`.
    """

    operator_class: ClassVar[Any]
    #: Retries of the scenario's task (the scenarios need one).
    retries: ClassVar[int] = 1
    #: ``execution_timeout`` of every try: a scenario that hangs fails within it, not after minutes.
    scenario_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    #: Seconds a submitted job may go without a status call through ``get_job_status`` before the
    #: kit ends the scenario as stalled (a poll loop that bypasses the mixin's hooks never ends).
    stall_timeout: ClassVar[float] = 10.0
    #: How unkind the fake is in every scenario (through the driver's ``set_realism``; switched
    #: off after): a young job missing for 0.2 s (each status read that misses it costs the
    #: mixin's first 0.25 s wait, not more), 100 status/list calls a second after a burst of 50
    #: (a lookup that lists by status over pages of 2 makes dozens of calls; a tighter bucket
    #: turns each into jittered waits of seconds), lists paged 2 at a time so every lookup pages.
    #: The realism scenarios raise the lag, the throttling or the paging each on its own.
    realism: ClassVar[Realism] = Realism.unkind(
        visibility_lag=0.2, throttle_rate=100.0, throttle_burst=50, page_size=2
    )

    #: Templated fields that are not part of the job (connections, regions, how to wait): the
    #: fingerprint scenario changes every other templated field and expects a new fingerprint.
    fields_outside_the_spec: ClassVar[frozenset[str]] = frozenset(
        {
            "aws_conn_id",
            "region_name",
            "verify",
            "botocore_config",
            "databricks_conn_id",
            "databricks_retry_args",
        }
    )

    #: Arguments that make the operator defer, with a fast trigger (``{"deferrable": True,
    #: "waiter_delay": 0.05, "waiter_max_attempts": 1000}``). None: the deferrable path is not
    #: checked, and ``test_deferrable_path`` is skipped saying so.
    deferrable_kwargs: ClassVar[dict[str, Any] | None] = None

    def operator_kwargs(self, cloud: CloudDriver, spec_marker: str) -> dict[str, Any]:
        """
        The operator's own arguments. ``spec_marker`` must land in a templated field that is part
        of the job spec (a name, a parameter), so that changing it changes the fingerprint.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement operator_kwargs(cloud, spec_marker): the "
            f"operator's arguments, with spec_marker in a templated field of the job's spec"
        )

    # --------------------------------------------------------------------------- machinery
    def _run(
        self,
        cloud: CloudDriver,
        probe: ScenarioProbe,
        *,
        map_markers: list[str] | None = None,
        spec_value: str = "v1",
        realism: Realism | None = None,
        stall_timeout: float | None = None,
        **overrides: Any,
    ) -> DagRunOutcome:
        from airflow.sdk import DAG

        check_operator_class(self.operator_class)
        dag_id = f"contract_{type(self).__name__}_{uuid.uuid4().hex[:8]}"
        common = {
            "retries": self.retries,
            "retry_delay": timedelta(0),
            "execution_timeout": self.scenario_timeout,
            "cloud_retry": RetryPolicy(attempts=3, wait=wait_none()),
            "state_store_retry": RetryPolicy(attempts=1, wait=wait_none()),
            "resume_delay": timedelta(0),
            "max_resumes": 3,
            # A loaded test machine (parallel workers) may take seconds to answer "why was I
            # stopped?"; an unanswered question is a checkpoint, which is not what a scenario tests.
            "stop_classification_timeout": 20.0,
            **overrides,
        }
        os.environ[f"AIRFLOW_VAR_{SPEC_VARIABLE}"] = spec_value
        with DAG(dag_id, schedule=None) as dag:
            if map_markers is None:  # a scenario's overrides win over the operator's own arguments
                arguments = {**self.operator_kwargs(cloud, SPEC_TEMPLATE), **overrides}
                self.operator_class(task_id="job", **{**common, **arguments})
            else:
                per_index = [self.operator_kwargs(cloud, marker) for marker in map_markers]
                shared = {k: v for k, v in per_index[0].items() if all(p.get(k) == v for p in per_index)}
                self.operator_class.partial(task_id="job", **common, **shared).expand_kwargs(
                    [{k: v for k, v in p.items() if k not in shared} for p in per_index]
                )
        with (
            realism_of(cloud, self.realism if realism is None else realism),
            probe.install(self.operator_class),
            stock_tripwires(self.operator_class, probe),
            _StallWatch(probe, self.stall_timeout if stall_timeout is None else stall_timeout) as watch,
        ):
            outcome = run_dag(dag)
        # The cause first: a defect seen inside a try, then a fake that failed, then a stall.
        if probe.defects:
            raise AssertionError(probe.defects[0])
        fake_errors = getattr(cloud, "fake_errors", None)
        if fake_errors is not None and (errors := fake_errors()):
            raise AssertionError(f"the fake failed, not the operator: {errors[0]}")
        if watch.stalled is not None:
            raise AssertionError(watch.stalled)
        return outcome

    def _check_token_replayed(self, cloud: CloudDriver, namesakes: int = 0) -> None:
        """One line for an operator that declares idempotent submission but sends no token."""
        submitted = cloud.submitted_ids()
        if self.operator_class.submission_is_idempotent and len(submitted) > 1 + namesakes:
            raise AssertionError(
                f"{self.operator_class.__name__} declares submission_is_idempotent = True, yet the "
                f"submit re-sent after a crash before persist created another job ({submitted}): "
                f"submit_job must send self.submission_token in the service's idempotency field "
                f"(or derive the job's unique name from it), so the service answers with the first "
                f"job; find_job is never called for an idempotent operator"
            )

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
        self._check_stock_xcoms(outcome, cloud, cloud.submitted_ids()[0], "fresh")

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
        self._check_stock_xcoms(outcome, cloud, cloud.submitted_ids()[0], "reconnect")

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
        self._check_stock_xcoms(outcome, cloud, cloud.submitted_ids()[0], "adopt-succeeded")

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

    def test_deferrable_path(self, cloud: CloudDriver) -> None:
        """
        Deferred, the job ends while the trigger waits: the task resumes through the engine, one
        job, the record completed, and the stock XComs (see ``stock_xcoms``).
        """
        if self.deferrable_kwargs is None:
            pytest.skip(
                f"{type(self).__name__} declares no deferrable_kwargs: the deferrable path of "
                f"{self.operator_class.__name__} is not checked"
            )
        deferrals: list[str] = []
        original_defer = self.operator_class.defer
        probe = ScenarioProbe(cloud, lambda *_: None)  # the job ends once the task defers

        def defer(op: Any, **kwargs: Any) -> Any:
            deferrals.append(type(kwargs.get("trigger")).__name__)
            for external_id in [i for ids in probe.submitted.values() for i in ids]:
                probe.cloud.finish(external_id, succeeded=True)  # the trigger's first check sees it
            return original_defer(op, **kwargs)

        with mock.patch.object(self.operator_class, "defer", defer):
            outcome = self._run(cloud, probe, **self.deferrable_kwargs)
        assert deferrals != [], f"{self.operator_class.__name__} never deferred with {self.deferrable_kwargs}"
        assert outcome.task("job").state == "success", (deferrals, dict(probe.submitted))
        assert len(cloud.submitted_ids()) == 1
        record = self._record(outcome)
        assert record["phase"] == "completed"
        assert record["external_id"] == cloud.submitted_ids()[0]
        self._check_stock_xcoms(outcome, cloud, cloud.submitted_ids()[0], "deferrable")

    def test_crash_between_submit_and_persist(self, cloud: CloudDriver) -> None:
        """A crash after the service accepted the job but before its id was stored causes no duplicate."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = self._run(cloud, probe)
        self._check_token_replayed(cloud)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 2
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == [cloud.submitted_ids()[0]]

    def test_find_job_ignores_a_namesake_with_another_token(self, cloud: CloudDriver) -> None:
        """
        A crash before persist, with a newer job of the same spec under another token: the retry
        reconnects to the job of its own token, never to the newest namesake.
        """
        probe = ScenarioProbe(
            cloud, finish_on_first_poll(), crash_after_submit={1}, namesake_after_submit={1}
        )
        outcome = self._run(cloud, probe)
        own = probe.submitted[1][0]
        assert probe.namesakes != [] and probe.namesakes[0] != own, "the kit's namesake was not created"
        self._check_token_replayed(cloud, namesakes=1)
        assert outcome.task("job").state == "success"
        assert probe.polled[2] == [own], (
            f"try 2 polled {probe.polled[2]}, not its own job {own!r} (namesake {probe.namesakes[0]!r}): "
            f"find_job must return only a job that carries the token it is given"
        )
        assert len(cloud.submitted_ids()) == 2, f"jobs created: {cloud.submitted_ids()}"

    def test_expired_job_raises_job_not_found(self, cloud: CloudDriver) -> None:
        """
        A job the service forgot is reported with JobNotFoundError (not a pseudo-state), and the
        retry submits the next generation once the job is older than its visibility window.
        """

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1:
                probe.cloud.expire(external_id)
                probe.expired.add(str(external_id))
                raise SimulatedWorkerCrash("worker died; the service's history then expired")
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        # Expired, not young: within its visibility window a job the service does not find is
        # waited for (it may not be visible yet); a 1 s window makes the forgotten job old at once.
        # At lag 0 this is the proof's reconnect-after-expiry case (test_proof_* has the lagged one).
        outcome = self._run(cloud, probe, visibility_window=1.0, realism=self._lagged(0.0))
        self._proof("reconnect_after_expiry", 0.0, cloud, outcome)
        assert probe.expired_reads != [], "nothing asked the service about the expired job"
        assert set(probe.expired_reads) == {"raised JobNotFoundError"}, (
            f"get_job_status on an expired job: {probe.expired_reads}; it must raise "
            f"airflow_resumable.exceptions.JobNotFoundError"
        )
        assert outcome.task("job").state == "success"
        submitted = cloud.submitted_ids()
        assert len(submitted) == 2 and probe.polled[2] == [submitted[1]], (submitted, dict(probe.polled))
        assert self._record(outcome)["generation"] == 2

    def test_an_error_like_not_found_is_not_taken_for_it(self, cloud: CloudDriver) -> None:
        """
        A status read refused with the look of "not found" (the service's not-found status or
        error code, for another cause) while the job exists is not a forgotten job: whatever the
        try does with the error, the job is not replaced by a second one.

        .. versionadded:: 0.5.0
        """
        refuse = getattr(cloud, "refuse_next_status_read_like_not_found", None)
        if refuse is None:
            pytest.skip(f"{type(cloud).__name__} has no refuse_next_status_read_like_not_found()")
        lookalike = cloud.not_found_lookalike()  # type: ignore[attr-defined]
        if lookalike is None:
            pytest.skip(f"{type(cloud).__name__}: the service's not-found answer is unmistakable")

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if try_number == 1 and index == 0:
                refuse()  # the fault answers the very next status read, this one
                probe.lookalike = lookalike
                return
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe, retries=1)
        assert probe.lookalike_reads, "the operator made no status read after the lookalike was armed"
        submitted = cloud.submitted_ids()
        assert len(submitted) == 1, (
            f"a second job after a status read answered {probe.lookalike_reads[0]} on a job that "
            f"exists: jobs created {submitted}"
        )
        assert self._record(outcome)["generation"] == 1
        assert outcome.task("job").state == "success"

    def test_throttled_submit_costs_no_retry(self, cloud: CloudDriver) -> None:
        """A throttled submit is retried within the same try (is_transient_error knows throttling)."""
        throttle = getattr(cloud, "throttle_next_submit", None)
        if throttle is None:
            pytest.skip(f"{type(cloud).__name__} has no throttle_next_submit()")
        throttle()
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = self._run(cloud, probe)
        assert outcome.task("job").try_number == 1, "a throttled submit burned a retry"
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1

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

    def test_fingerprint_covers_every_templated_field(self, cloud: CloudDriver) -> None:
        """
        Changing any templated field of the spec changes ``job_fingerprint`` (else a retry after
        the user fixed that input would adopt the old job). Each templated field that is set and
        not in :attr:`fields_outside_the_spec` is changed in turn; no job is submitted.
        """
        kwargs = self.operator_kwargs(cloud, "kit-marker")
        misses = fingerprint_misses(self.operator_class, kwargs, self.fields_outside_the_spec)
        assert not misses, (
            f"{self.operator_class.__name__}.job_fingerprint ignores the templated field(s) "
            f"{', '.join(misses)}: a retry after the user changed it would adopt the old job; hash it "
            f"with the request (AwsJobMixin: job_request()), or list it in fields_outside_the_spec "
            f"if it is not part of the job"
        )
        assert cloud.submitted_ids() == []

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
        _check_canceller_registered_for_the_custodian(str(entry["cancel"]["with"]))

    def test_adopts_stock_operator_id(self, cloud: CloudDriver) -> None:
        """An id stored by the stock operator's code path (the core mixin) is adopted, not resubmitted."""
        from airflow.sdk import ResumableJobMixin as CoreMixin

        stock = stock_classes(self.operator_class)
        if not any(issubclass(klass, CoreMixin) for klass in stock):
            named = stock[0].__name__ if stock else "operator"
            pytest.skip(
                f"the stock {named} stores no job id (it is not built on Airflow's ResumableJobMixin): "
                f"there is no stock id to adopt (docs/maintainers.md, 'A stock operator that stores "
                f"no id')"
            )

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
            # No lag: a stock operator's bare id has no age, so the mixin takes "not found" for
            # gone (a retry delay has passed since its submit); the kit's retries have no delay.
            outcome = self._run(cloud, probe, realism=self.realism.evolve(visibility_lag=0.0))
        assert outcome.task("job").state == "success"
        assert len(cloud.submitted_ids()) == 1
        assert probe.polled[2] == [cloud.submitted_ids()[0]]
        assert self._record(outcome)["external_id"] == cloud.submitted_ids()[0]

    def test_corrupt_record_with_recoverable_id(self, cloud: CloudDriver) -> None:
        """A damaged record next to a valid stored id is reported and the job is still reconnected."""
        _overwrite_record_on_first_poll = _record_vandal({"schema": "something-else", "x": 1})
        probe = ScenarioProbe(cloud, _overwrite_record_on_first_poll)
        # No lag: an id kept beside an unreadable record has no age, so "not found" means gone.
        outcome = self._run(cloud, probe, realism=self.realism.evolve(visibility_lag=0.0))
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


#: Methods that must come from a resumable class: a stock operator's version bypasses the engine.
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


def _check_canceller_registered_for_the_custodian(name: str) -> None:
    """
    The canceller a recipe names must resolve in a fresh process (the scheduler, the API server),
    which imports no operator module: through the entry point group, not only ``register_canceller``.
    """
    import subprocess
    import sys

    from airflow_resumable.custodian import CANCELLER_ENTRY_POINT_GROUP

    code = (
        "import importlib, sys\n"
        "from airflow_resumable.custodian import canceller_path\n"
        "path = canceller_path(sys.argv[1])\n"
        "if path is None: sys.exit('unregistered')\n"
        "module, _, function = path.partition(':')\n"
        "getattr(importlib.import_module(module), function)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120, check=False
    )
    if found.returncode == 0:
        return
    why = (found.stderr.strip().splitlines() or ["?"])[-1]
    if why == "unregistered":
        raise AssertionError(
            f"the canceller {name!r} is registered only in this test process: the custodian runs in "
            f"the scheduler and the API server, which never import your operator module; register it "
            f"through the entry point group {CANCELLER_ENTRY_POINT_GROUP!r} in your package metadata, "
            f"then install the package again (pip install -e .)"
        )
    raise AssertionError(f"the canceller {name!r} cannot be loaded in a fresh process: {why}")
