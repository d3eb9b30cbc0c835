"""
Chaos on the production topology: CeleryExecutor, Redis broker, PostgreSQL metadata database.

One deployment for the module (api-server, scheduler, dag-processor, an ``airflow celery
worker`` with the warm-shutdown bridge on the default queue, and one worker per worker-level
case, ``_chaos_celery``) on a fresh PostgreSQL database and the machine's Redis, against the
session's fake Databricks and moto. The cases run concurrently through the same campaign as
``test_chaos.py`` and are asserted the same way (jobs per generation from the fake cloud's
ledger, cancels, no orphans, final state and try), plus the worker-level figures:
``checkpoint_s`` (shutdown signal to ``up_for_reschedule``), ``reconnect_s`` (to the next status
read of the same job), ``unwatched_s`` (a job nobody polled, from the fault to the next read).

Task-level cases (the same faults as on LocalExecutor, on the Celery topology), for Databricks
submit-run and Batch: ``sigterm`` (the task's supervisor is a Celery pool process), ``sigkill``,
``mark_failed``, ``lost_submit_response``. Worker-level cases, for every operator: see
``_chaos_celery``. Skipped without PostgreSQL
and Redis (one line says so); under ``CI=true`` their absence fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _chaos_celery import BRIDGE_ENV, CeleryCaseRun
from test_chaos import EVERY_CASE_IN_CI, FULL_MATRIX, OPERATORS, report

from airflow_resumable.testing.cluster import AirflowCluster, CeleryWorker, airflow_cluster
from airflow_resumable.testing.services import require

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator, Mapping

    from _chaos_campaign import Campaign

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

DAGS = Path(__file__).parents[1] / "dags"
CASE_RUN = CeleryCaseRun
SLOT_LIMIT = 5
#: Every operator runs the worker-level cases; the task-level ones (already run for every operator
#: on LocalExecutor) run for two.
TASK_LEVEL_OPERATORS = ("databricks_submit_run", "batch")
WORKER_LEVEL = frozenset({"worker_warm_bridged", "worker_warm_plain", "worker_cold", "worker_crash"})
#: Start order: the long ones first (a crash waits for the heartbeat timeout).
ORDER = (
    "lost_submit_response",
    "worker_warm_plain",
    "worker_crash",
    "sigkill",
    "worker_warm_bridged",
    "worker_cold",
    "sigterm",
    "mark_failed",
)
#: The operators of 0.2.0 run the bridged warm shutdown (every worker-level case with
#: ``AIRFLOW_RESUMABLE_CHAOS=full``): the bridge signals what an operator registers, the rest is
#: the worker's and the engine's, which the core operators cover.
ADDED_OPERATOR_CASES = frozenset({"worker_warm_bridged"})
MATRIX = [
    pytest.param(op, case, id=f"{op}-{case}")
    for case in ORDER
    for op in OPERATORS
    if op in TASK_LEVEL_OPERATORS
    or (case in WORKER_LEVEL and (FULL_MATRIX or op in EVERY_CASE_IN_CI or case in ADDED_OPERATOR_CASES))
]
RESULT_TIMEOUT = 600


@dataclass(frozen=True)
class Expected:
    """The end of a case: state and try of the task instance, jobs cancelled, checkpointed or not."""

    state: str
    try_number: int
    cancelled: int = 0


EXPECTED = {
    "sigterm": Expected("success", 1),
    "sigkill": Expected("success", 2),
    "mark_failed": Expected("failed", 1, cancelled=1),
    "lost_submit_response": Expected("success", 1),
    "worker_warm_bridged": Expected("success", 1),
    "worker_warm_plain": Expected("success", 2),
    "worker_cold": Expected("success", 1),
    "worker_crash": Expected("success", 2),
}
assert sorted(EXPECTED) == sorted(ORDER)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    metadata_database: Callable[..., contextlib.AbstractContextManager[str | None]],
    deployment_env: Mapping[str, str],
) -> Iterator[AirflowCluster]:
    """
    The CeleryExecutor deployment of this module (overrides the session's LocalExecutor one).

    The default worker has the bridge and six pool processes; the heartbeat timeout is the
    session deployment's 20 s.
    """
    services = require("postgres", "redis")
    default_worker = CeleryWorker("celery-worker", concurrency=6, env=BRIDGE_ENV)
    with (
        metadata_database(required=True) as database_url,
        airflow_cluster(
            tmp_path_factory,
            DAGS,
            env=deployment_env,
            executor_parallelism=16,
            database_url=database_url,
            executor="CeleryExecutor",
            broker_url=services.redis,
            celery_workers=[default_worker],
        ) as started,
    ):
        yield started


@pytest.mark.parametrize(("operator", "case"), MATRIX)
def test_celery_chaos_case(
    campaign: Campaign, operator: str, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On CeleryExecutor, under this fault: one job per generation, no orphans, the expected end state."""
    outcome = campaign.result(f"{operator}-{case}", timeout=RESULT_TIMEOUT)
    report(outcome, capsys)
    expected = EXPECTED[case]
    per_generation = outcome.jobs_per_generation()
    assert set(per_generation.values()) == {1}, f"a generation submitted twice: {per_generation}"
    assert len(per_generation) == 1, "one generation: every fault reconnects or cancels"
    assert outcome.orphans == [], "jobs left running with no task polling them"
    assert "diverted" not in outcome.figures, outcome.figures["diverted"]
    assert outcome.tis == {-1: (expected.state, expected.try_number)}
    assert len(outcome.cancelled) == expected.cancelled
    figures = outcome.figures
    if case != "mark_failed":
        assert figures["ledger_variables_left"] == [], "the ledger Variable outlived the job"
    if case == "worker_warm_bridged":
        assert figures["checkpoint_s"] <= 10, "the bridge makes the task checkpoint at once"
        assert figures["worker_waits_for_bystander"], "the worker still waits for the plain task"
        assert figures["bystander_signalled"] is False, "the bridge signals resumable tasks only"
        assert figures["bystander"] == "success/try 1"
        assert figures["worker_killed"] is False, "the worker exited by itself once the tasks ended"
        assert "reconnect_s" in figures
    if case == "worker_warm_plain":
        assert figures["checkpointed"] is False, "without the bridge no signal reaches the task"
        assert figures["worker_killed"] is True, "the warm shutdown waited for the task until the grace"
    if case == "worker_cold":
        assert figures["checkpointed"] is True
        assert figures["checkpoint_s"] <= 10, "Celery's SIGTERM to the pool reaches the task at once"
        assert figures["worker_killed"] is False
    if case == "lost_submit_response":
        assert figures["lost_responses"] == 1, "the first submit call's answer was lost"
