"""
Chaos on real Airflow: every resumable operator under every kind of disruption, side by side.

Each case is one DAG run of ``dags/chaos_resumable.py`` on the session's cluster, against the fake
Databricks or the moto lifecycle controller (each in its own process, so remote jobs outlive the
workers the tests kill). The cases run concurrently (``_chaos_campaign``); each test waits for its
own case and asserts, from the fake cloud's ledger and the REST API:

- **one remote job per intended generation**: the jobs the submit calls created, grouped by the
  submission token they carry (Databricks ``idempotency_token``, EMR ``clientToken``, the Batch tag
  ``airflow-resumable-token``, the EMR step-name marker), one job per token, and as many tokens as
  the case intends (two after a clear, one per map index);
- **no orphans**: no job of the case still runs once its DAG run has ended (every job was
  finished by the test while a task polled it, or cancelled);
- **the final state and try number** of each task instance (a worker SIGTERM consumes no try; a
  SIGKILL consumes one; a user's stop, a clear and a timeout cancel).

What each case injects:

=========================  ========================================================================
case                       fault
=========================  ========================================================================
no_fault                   none: submit, poll, the job finishes (the baseline)
sigterm                    SIGTERM to the task's supervisor (LocalExecutor worker) while polling
sigkill                    SIGKILL to supervisor and task while polling (a crash; the scheduler's
                           heartbeat timeout fails the try, the retry reconnects)
crash_before_persist       the api-server holds the write of the record that carries the new job's
                           id (phase ``submitted``, plugin ``chaos_faults``: action ``stall``), the
                           test SIGKILLs the worker: the job exists, its id was never stored
storm_5xx                  the fake cloud answers the next 3 status calls with HTTP 500 (fewer
                           than the operator's status-call budget: ``cloud_retry`` 4 attempts)
store_write_fails_once     the api-server answers the first write of the intent record with 429
                           (``chaos_faults``: action ``refuse``). The supervisor's client retries
                           only 5xx, so ``task_state_store.set`` raises once in the task; the
                           mixin's ``state_store_retry`` writes it again before submitting
mark_failed                REST ``PATCH .../taskInstances/job`` ``new_state=failed`` while polling
clear_while_running        REST ``clearTaskInstances`` while polling: the server says
                           ``restarting``, the supervisor stops the task, the job is cancelled, and
                           the next try submits a fresh generation
execution_timeout          ``execution_timeout=8s`` on a job that never ends (``retries=0``)
three_disruptions          SIGTERM, then SIGKILL, then SIGTERM, each while polling the same job
mapped_sigterm_all         ``.partial().expand_kwargs()`` of three: SIGTERM to the three
                           supervisors at once
lost_submit_response       the fake cloud creates the job, then answers the submit call with
                           HTTP 500; the client library's own retries are on (DAG shape
                           ``_sdk_retries``: botocore 3 attempts, the Databricks hook 3). A
                           service with a token replays the job; for Batch and EMR steps the
                           submit is not re-sent, ``find_job`` finds the job by its token
=========================  ========================================================================

Which operator runs which case (``x``: here; ``D``: in ``test_databricks_disruptions.py``, not
repeated here):

======================  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====
operator                no     term   kill   crash  5xx    store  fail   clear  tmout  three  mapd   lost
======================  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====
databricks_submit_run   x      D(1)   D(2)   D(3)   x      x      D(4)   x      D(5)   D(6)   x      x
databricks_run_now      x      x      x      x      x      x      x      x      x      x      x      x
batch                   x      x      x      x      x      x      x      x      x      x      x      x
emr_serverless          x      x      x      x      x      x      x      x      x      x      x      x
emr_containers          x      x      x      x      x      x      x      x      x      x      x      x
emr_steps               x      x      x      x      x      x      x      x      x      x      x      x
======================  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====

(1) ``TestWorkerShutdown::test_sigterm_to_supervisor_is_a_checkpoint``, (2)
``::test_sigkill_of_supervisor_and_task_reconnects``, (3)
``TestCrashBetweenSubmitAndPersist::test_crash_after_runs_submit_creates_no_duplicate`` (the
cloud's answer to runs/submit is held instead of the store write), (4)
``TestUserStop::test_mark_failed_cancels``, (5) ``::test_execution_timeout_cancels``, (6)
``TestWorkerShutdown::test_three_sigterms_then_a_fourth_past_the_bound`` (three SIGTERMs, a
fourth past ``max_resumes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from _chaos_cases import CASES, STORM

if TYPE_CHECKING:
    from _chaos_campaign import Campaign
    from _chaos_cases import Outcome

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

OPERATORS = (
    "databricks_submit_run",
    "databricks_run_now",
    "batch",
    "emr_serverless",
    "emr_containers",
    "emr_steps",
)
#: Whether the operator's service deduplicates a re-sent submit call on its token.
IDEMPOTENT = {op: not op.startswith(("batch", "emr_steps")) for op in OPERATORS}
#: Databricks submit-run cases that ``test_databricks_disruptions.py`` already runs.
COVERED = {
    ("databricks_submit_run", case)
    for case in (
        "sigterm",
        "sigkill",
        "crash_before_persist",
        "mark_failed",
        "execution_timeout",
        "three_disruptions",
    )
}
#: Start order (= test order): the storms first (alone in their fault domain, so they go while the
#: cluster is idle), then the long cases, then the short ones.
ORDER = (
    "storm_5xx",
    "lost_submit_response",
    "three_disruptions",
    "mapped_sigterm_all",
    "crash_before_persist",
    "sigkill",
    "clear_while_running",
    "sigterm",
    "store_write_fails_once",
    "mark_failed",
    "execution_timeout",
    "no_fault",
)
assert sorted(ORDER) == sorted(CASES)
MATRIX = [
    pytest.param(op, case, id=f"{op}-{case}")
    for case in ORDER
    for op in OPERATORS
    if (op, case) not in COVERED
]
#: Seconds a test waits for its case, queueing included.
RESULT_TIMEOUT = 840


@dataclass(frozen=True)
class Expected:
    """The end of a case: task state and try number, generations per map index, jobs cancelled."""

    state: str
    try_number: int
    generations: int = 1
    cancelled: int = 0


EXPECTED = {
    "no_fault": Expected("success", 1),
    "sigterm": Expected("success", 1),
    "sigkill": Expected("success", 2),
    "crash_before_persist": Expected("success", 2),
    "storm_5xx": Expected("success", 1),
    "store_write_fails_once": Expected("success", 1),
    "mark_failed": Expected("failed", 1, cancelled=1),
    "clear_while_running": Expected("success", 2, generations=2, cancelled=1),
    "execution_timeout": Expected("failed", 1, cancelled=1),
    "three_disruptions": Expected("success", 2),
    "mapped_sigterm_all": Expected("success", 1),
    "lost_submit_response": Expected("success", 1),
}


def report(outcome: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    figures = {
        "jobs": len(outcome.jobs),
        "per_generation": sorted(outcome.jobs_per_generation().values()),
        "submit_calls": outcome.submit_calls,
        "cancelled": len(outcome.cancelled),
        "orphans": len(outcome.orphans),
        "tis": {i: f"{state}/try {tries}" for i, (state, tries) in outcome.tis.items()},
        **outcome.figures,
    }
    with capsys.disabled():
        print(
            f"\n  [{outcome.operator} x {outcome.case}] " + ", ".join(f"{k}={v}" for k, v in figures.items())
        )


@pytest.mark.parametrize(("operator", "case"), MATRIX)
def test_chaos_case(campaign: Campaign, operator: str, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Under this fault: one remote job per intended generation, no orphans, the expected end state."""
    outcome: Outcome = campaign.result(f"{operator}-{case}", timeout=RESULT_TIMEOUT)
    report(outcome, capsys)
    expected = EXPECTED[case]
    map_indexes = sorted(outcome.tis)
    per_generation = outcome.jobs_per_generation()
    assert None not in {job.token for job in outcome.jobs}, "every job carries its submission token"
    assert set(per_generation.values()) == {1}, f"a generation submitted twice: {per_generation}"
    assert len(per_generation) == expected.generations * len(map_indexes)
    assert outcome.orphans == [], "jobs left running with no task polling them"
    assert outcome.tis == dict.fromkeys(map_indexes, (expected.state, expected.try_number))
    assert len(outcome.cancelled) == expected.cancelled
    if case == "clear_while_running":
        assert outcome.cancelled == [outcome.jobs[0].key], "the first generation's job is the one cancelled"
    if case == "storm_5xx":
        assert outcome.figures["injected_500s"] == STORM
    if case == "store_write_fails_once":
        assert outcome.figures["refused_writes"] == 1
    if case == "crash_before_persist":
        assert outcome.figures["phase_at_crash"] == "intent", "the id must not have been stored"
    if case == "lost_submit_response":
        assert outcome.figures["lost_responses"] == 1, "the first submit call's answer was lost"
        # With a token the service replays the job to the re-sent call; without one the call is
        # never re-sent, find_job adopts the job instead.
        assert outcome.submit_calls >= 2 if IDEMPOTENT[operator] else outcome.submit_calls == 1
    if case in ("sigterm", "three_disruptions"):
        assert outcome.figures.get("resumes", 1) >= 1
