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
  SIGKILL and a clear consume one; a user's stop and a timeout cancel);
- **what a clear means** ("run this task's intent again"): an active job whose spec is unchanged
  is reconnected (no cancel, one generation), an ended one is followed by a fresh generation, a
  job whose spec changed is cancelled by the next try before it submits the new spec;
- **no remote job without a watcher**: a user's stop reaches the job in every task state. While
  a try runs, the try cancels; while deferred, the trigger's ``on_kill``; while checkpointed
  (``up_for_reschedule``) or waiting for a retry after a crash (``up_for_retry``) no process
  polls the job, and the custodian (``airflow_resumable.custodian``: listener hooks in the
  api-server, a sweep every 5 s in the scheduler) cancels it. A triggerer restart cancels
  nothing. The report line gives ``cancel_s``: seconds from the user's request to the cancel
  call in the fake cloud's ledger.

What each case injects:

============================  ========================================================================
case                          fault
============================  ========================================================================
no_fault                      none: submit, poll, the job finishes (the baseline)
sigterm                       SIGTERM to the task's supervisor (LocalExecutor worker) while polling
sigkill                       SIGKILL to supervisor and task while polling (a crash; the scheduler's
                              heartbeat timeout fails the try, the retry reconnects)
crash_before_persist          the api-server holds the write of the record that carries the new job's
                              id (phase ``submitted``, plugin ``chaos_faults``: action ``stall``), the
                              test SIGKILLs the worker: the job exists, its id was never stored
storm_5xx                     the fake cloud answers the next 3 status calls with HTTP 500 (fewer
                              than the operator's status-call budget: ``cloud_retry`` 4 attempts)
store_write_fails_once        the api-server answers the first write of the intent record with 429
                              (``chaos_faults``: action ``refuse``). The supervisor's client retries
                              only 5xx, so ``task_state_store.set`` raises once in the task; the
                              mixin's ``state_store_retry`` writes it again before submitting
mark_failed                   REST ``PATCH .../taskInstances/job`` ``new_state=failed`` while polling
clear_while_running           REST ``clearTaskInstances`` while polling: the server says
                              ``restarting``, the try hands the job over (no cancel) and the next try
                              reconnects to it
execution_timeout             ``execution_timeout=8s`` on a job that never ends (``retries=0``)
three_disruptions             SIGTERM, then SIGKILL, then SIGTERM, each while polling the same job
mapped_sigterm_all            ``.partial().expand_kwargs()`` of three: SIGTERM to the three
                              supervisors at once
lost_submit_response          the fake cloud creates the job, then answers the submit call with
                              HTTP 500; the client library's own retries are on (DAG shape
                              ``_sdk_retries``: botocore 3 attempts, the Databricks hook 3). A
                              service with a token replays the job; for Batch and EMR steps the
                              submit is not re-sent, ``find_job`` finds the job by its token
clear_while_checkpointed      SIGTERM to the supervisor while polling (a checkpoint: the TI waits
                              ``up_for_reschedule``), then a clear: the next try reconnects
clear_after_crash             SIGKILL to supervisor and task; once the heartbeat timeout made the TI
                              ``up_for_retry``, a clear: the next try reconnects
clear_after_success           the job finishes, the TI succeeds, then a clear: the next try submits
                              a fresh generation (a clear means "run it again")
clear_spec_changed            while polling, the Variable ``chaos_spec_<tag>`` (part of the rendered
                              spec) changes to ``v2`` and the task is cleared: the next try cancels
                              the old job ("superseded"), then submits generation 2
clear_wiped_store             SIGTERM (checkpoint), then REST ``DELETE .../state-store`` (every key of
                              the TI, as apache/airflow#72100 proposes a clear should) and a clear: the
                              next try finds the job through the library's ledger Variable
                              (``airflow_resumable.ledger.*``) and reconnects; no ledger Variable of
                              the run is left once it succeeded
checkpointed_mark_failed      SIGTERM (checkpoint: ``up_for_reschedule``), then mark failed: the
                              custodian (api-server listener) cancels the job
checkpointed_dag_run_failed   SIGTERM, then REST ``PATCH .../dagRuns/<run>`` ``state=failed`` (which
                              fails the TI): the custodian (api-server listener) cancels the job
checkpointed_dag_run_deleted  SIGTERM, then REST ``DELETE .../dagRuns/<run>``: no hook reports it, the
                              scheduler's periodic sweep (every 5 s here) cancels the job; no task
                              instance is left to assert on. Airflow 3.3.2 refuses to delete a
                              running DAG run (409), so the case pauses the DAG (shape
                              ``_deletable``), waits for a scheduler pass, sets the run ``queued``
                              (no task instance changes, no hook) and deletes it
crash_mark_failed             SIGKILL to supervisor and task; once the heartbeat timeout made the TI
                              ``up_for_retry``, mark failed: the custodian cancels the job
deferred_clear                (``deferrable=True``) a clear while the TI is ``deferred``: the trigger's
                              ``on_kill`` leaves the job alone, the next try reconnects
deferred_mark_failed          (``deferrable=True``) mark failed while ``deferred``: the trigger's
                              ``on_kill`` or the custodian, which hears the same stop in the
                              api-server, cancels the job; the custodian is usually first (well
                              within a second), the trigger then sees the job ended and fires
                              without ``on_kill``; a second cancel call is harmless
deferred_triggerer_restart    (``deferrable=True``) while the trigger polls the job, SIGTERM the
                              triggerer, wait for its exit, start a new one: it runs the trigger
                              again, which polls the same job (no ``on_kill``, no cancel); the
                              case runs alone among the deferrable ones
pod_termination               a KubernetesExecutor pod's end: SIGTERM to the supervisor alone (the
                              pod's PID 1), 10 s of grace, then SIGKILL to what still runs of the
                              task: it checkpointed within the grace (nothing was left to kill), and
                              the next execution reconnects
============================  ========================================================================

The shapes of ``dags/chaos_resumable.py`` the cases run on: ``_timeout`` (execution_timeout),
``_mapped`` (mapped_sigterm_all), ``_sdk_retries`` (lost_submit_response), ``_held`` (a checkpoint
or a failed try waits 10 minutes, so the task waits for the test's action: clear_while_checkpointed,
clear_after_crash, clear_wiped_store, checkpointed_mark_failed, checkpointed_dag_run_failed,
crash_mark_failed), ``_deletable`` (the same, for the case that pauses its DAG:
checkpointed_dag_run_deleted), ``_deferrable`` (deferred_*); every other case runs on the base
shape ``chaos_<op>``.

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

The clear cases besides clear_while_running, run for every operator: clear_while_checkpointed,
clear_after_crash, clear_after_success, clear_spec_changed, clear_wiped_store, deferred_clear.

A user's stop in each task state, and a triggerer restart (every operator; ``cancel`` is the
expected number of cancelled jobs, and who cancels):

============================  =================  =================  =======  ==================
case                          task state         action             cancel   end (state / try)
============================  =================  =================  =======  ==================
mark_failed                   running            mark failed        1 try+   failed / 1
deferred_mark_failed          deferred           mark failed        1 trig+  failed / 1
checkpointed_mark_failed      up_for_reschedule  mark failed        1 cust   failed / 1
checkpointed_dag_run_failed   up_for_reschedule  DAG run failed     1 cust   failed / 1
checkpointed_dag_run_deleted  up_for_reschedule  DAG run deleted    1 cust   (no task instance)
crash_mark_failed             up_for_retry       mark failed        1 cust   failed / 1
deferred_clear                deferred           clear              0        success / 2
deferred_triggerer_restart    deferred           triggerer restart  0        success / 1
============================  =================  =================  =======  ==================

(``try``: the running try; ``trig``: the trigger's ``on_kill``; ``cust``: the custodian; ``+``:
the custodian hears that stop too, in the api-server, and often cancels first. The report line
counts the cancel calls that took effect, ``cancel_calls``, and names the processes whose
custodian cancelled, ``custodian_in``. Each case asserts no orphan and, except mark_failed, no
ledger Variable of its DAG run left.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from _chaos_cases import CASES, STORM
from _chaos_clouds import CHAOS_REALISM

from airflow_resumable.record import RECORD_KEY

if TYPE_CHECKING:
    from _chaos_campaign import Campaign
    from _chaos_cases import Outcome

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

#: The operators of 0.1.0: every case.
CORE_OPERATORS = (
    "databricks_submit_run",
    "databricks_run_now",
    "batch",
    "emr_serverless",
    "emr_containers",
    "emr_steps",
)
#: The operators of 0.2.0: every case with ``AIRFLOW_RESUMABLE_CHAOS=full`` (``make chaos``), else
#: the cases that reach code of their own: the token or ``find_job`` (crash_before_persist,
#: lost_submit_response), status reads across a checkpoint (sigterm), the cancel of a running try
#: (clear_spec_changed), the custodian's cancel recipe (checkpointed_mark_failed) and the trigger
#: (deferred_mark_failed). The other cases exercise the engine, the custodian and Airflow, which
#: the core operators cover.
ADDED_OPERATORS = (
    "databricks_notebook",
    "ecs",
    "glue",
    "sagemaker_training",
    "sagemaker_processing",
    "step_function",
)
ADDED_OPERATOR_CASES = frozenset(
    {
        "sigterm",
        "crash_before_persist",
        "lost_submit_response",
        "clear_spec_changed",
        "checkpointed_mark_failed",
        "deferred_mark_failed",
    }
)
FULL_MATRIX = os.environ.get("AIRFLOW_RESUMABLE_CHAOS") == "full"
#: The operators that run every case in ``make test``: one whose service deduplicates a token
#: (Databricks) and one that finds its job by tag (Batch). Every other operator runs the cases that
#: reach its own code (:data:`ADDED_OPERATOR_CASES`); the other cases exercise the engine, the
#: custodian and Airflow, the same for all. ``make chaos`` runs everything (CI stays well under 30
#: minutes on two cores: 0.2.0's CI, with every case for six operators, took 38).
EVERY_CASE_IN_CI = ("databricks_submit_run", "batch")
OPERATORS = CORE_OPERATORS + ADDED_OPERATORS
#: Whether the operator's service deduplicates a re-sent submit call (token or unique name).
IDEMPOTENT = {op: op not in ("batch", "emr_steps", "glue") for op in OPERATORS}
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
#: cluster is idle) and the triggerer restarts (alone among the deferrable cases, which wait for
#: them), then the long cases (a crash waits for the 20 s heartbeat timeout), then the short ones.
ORDER = (
    "storm_5xx",
    "lost_submit_response",
    "deferred_triggerer_restart",
    "three_disruptions",
    "clear_after_crash",
    "crash_mark_failed",
    "mapped_sigterm_all",
    "crash_before_persist",
    "sigkill",
    "clear_spec_changed",
    "clear_after_success",
    "clear_wiped_store",
    "clear_while_checkpointed",
    "checkpointed_dag_run_deleted",
    "checkpointed_mark_failed",
    "checkpointed_dag_run_failed",
    "clear_while_running",
    "deferred_clear",
    "deferred_mark_failed",
    "pod_termination",
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
    if (op, case) not in COVERED and (FULL_MATRIX or op in EVERY_CASE_IN_CI or case in ADDED_OPERATOR_CASES)
]
#: Seconds a test waits for its case, queueing included.
RESULT_TIMEOUT = 840


@dataclass(frozen=True)
class Expected:
    """
    The end of a case: task state and try number, generations per map index, jobs cancelled.

    ``state`` None: the DAG run was deleted, no task instance is left.
    """

    state: str | None
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
    "clear_while_running": Expected("success", 2),
    "execution_timeout": Expected("failed", 1, cancelled=1),
    "three_disruptions": Expected("success", 2),
    "mapped_sigterm_all": Expected("success", 1),
    "lost_submit_response": Expected("success", 1),
    "clear_while_checkpointed": Expected("success", 2),
    "clear_after_crash": Expected("success", 2),
    "clear_after_success": Expected("success", 2, generations=2),
    "clear_spec_changed": Expected("success", 2, generations=2, cancelled=1),
    "clear_wiped_store": Expected("success", 2),
    "checkpointed_mark_failed": Expected("failed", 1, cancelled=1),
    "checkpointed_dag_run_failed": Expected("failed", 1, cancelled=1),
    "checkpointed_dag_run_deleted": Expected(None, 0, cancelled=1),
    "crash_mark_failed": Expected("failed", 1, cancelled=1),
    "deferred_clear": Expected("success", 2),
    "deferred_mark_failed": Expected("failed", 1, cancelled=1),
    "deferred_triggerer_restart": Expected("success", 1),
    "pod_termination": Expected("success", 1),
}
assert sorted(EXPECTED) == sorted(CASES)
#: Cases after which the next try must have reconnected to the job it was handed.
RECONNECTS = frozenset(
    {
        "clear_while_running",
        "clear_while_checkpointed",
        "clear_after_crash",
        "clear_wiped_store",
        "deferred_clear",
        "deferred_triggerer_restart",
        "pod_termination",
    }
)
#: Cases that stop the task as a user does and time the cancel (figure ``cancel_s``).
USER_STOPS = frozenset(
    {
        "checkpointed_mark_failed",
        "checkpointed_dag_run_failed",
        "checkpointed_dag_run_deleted",
        "crash_mark_failed",
        "deferred_mark_failed",
    }
)


def report(outcome: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    figures = {
        "jobs": len(outcome.jobs),
        "per_generation": sorted(outcome.jobs_per_generation().values()),
        "submit_calls": outcome.submit_calls,
        "cancelled": len(outcome.cancelled),
        "orphans": len(outcome.orphans),
        "tis": {i: f"{state}/try {tries}" for i, (state, tries) in outcome.tis.items()},
        "lag_s": CHAOS_REALISM.visibility_lag,
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
    assert {job.spec for job in outcome.jobs} <= {"v1", "v2"}, "the spec's Variable part was rendered"
    assert set(per_generation.values()) == {1}, f"a generation submitted twice: {per_generation}"
    assert len(per_generation) == expected.generations * max(len(map_indexes), 1)
    assert outcome.orphans == [], "jobs left running with no task polling them"
    assert "diverted" not in outcome.figures, outcome.figures["diverted"]
    if expected.state is None:
        assert outcome.figures["dag_run"] == "deleted"
        assert outcome.tis == {}, "a deleted DAG run has no task instance"
    else:
        assert map_indexes, "the task instances were read"
        assert outcome.tis == dict.fromkeys(map_indexes, (expected.state, expected.try_number))
    assert len(outcome.cancelled) == expected.cancelled
    if case in USER_STOPS:
        assert "cancel_s" in outcome.figures, "the user's stop was timed to the cancel"
    if "ledger_variables_left" in outcome.figures:
        assert outcome.figures["ledger_variables_left"] == [], "the ledger Variable outlived the job"
    if case in RECONNECTS:
        assert "reconnect_s" in outcome.figures, "the next try read the same job's status"
    if case in ("clear_while_running", "clear_spec_changed"):
        assert outcome.figures["hand_over_in_try"] == [1], "the cleared try left the job to the next one"
    if case == "clear_spec_changed":
        assert outcome.cancelled == [outcome.jobs[0].key], "the first generation's job is the one cancelled"
        assert [job.spec for job in outcome.jobs] == ["v1", "v2"], "generation 2 carries the new spec"
        assert outcome.figures["superseded_in_try"] == [2], "the next try cancelled the old job (logged)"
    if case == "clear_wiped_store":
        assert RECORD_KEY in outcome.figures["store_before"], "the checkpoint was recorded"
        assert outcome.figures["store_after_delete"] == [], "the delete wiped the task's state"
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
    if case == "pod_termination":
        assert outcome.figures["task_killed_at_grace"] is False, "the task checkpointed within the grace"
    if case in ("sigterm", "three_disruptions"):
        assert outcome.figures.get("resumes", 1) >= 1
