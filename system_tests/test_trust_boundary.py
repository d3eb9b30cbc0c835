"""
The custodian acts only on what the task itself wrote (issue 19): forged and edited ledger entries
on a real Airflow deployment.

A user with Variable edit rights does what the issue's reporter did: reads the ledger Variable of a
running resumable Databricks task through the REST API (``/api/v2/variables``), and writes back a
copy naming a task instance that does not exist and a run Airflow never submitted (a *victim* run,
submitted straight to the fake Databricks), or edits the live entry's job id. The custodian in the
scheduler (a whole-ledger sweep every 5 s, ``system_tests/conftest.py``) and in the API server
(the mark-failed hook) must ignore every such entry: no victim run is cancelled, and a Variable it
does not trust is left where it is. A control proves the tests can fail: the same forgery sealed
with the deployment's own key (which only Airflow's components hold) is acted on.

Two sweeps are awaited by events, not by sleeping: the scheduler's warning "Ignoring a ledger entry
that is not trusted" for every forged key (sweep N), then the control's cancel, planted after that
warning, which a later sweep made after it had read the forged entries again (sweep N+1 or later).
Each test prints its figures.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from airflow_resumable._trust import SEAL_FIELD, seal, signing_key
from airflow_resumable.ledger import ledger_key
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing.cluster import wait_until
from airflow_resumable.testing.databricks import FAKE_TOKEN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

pytestmark = pytest.mark.system

DAG_ID = "resumable_databricks"
TASK = "submit_run"
#: Generous: a loaded 2-core machine; a sweep every 5 s.
TIMEOUT = 90.0
UNTRUSTED = "Ignoring a ledger entry that is not trusted"
#: What a forger changes in a copied entry, beyond its task instance and job id (issue 19, point 1).
VARIANTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "copied": lambda entry: None,
    "unsealed": lambda entry: entry.pop(SEAL_FIELD),
    "null_connection": lambda entry: entry["cancel"]["args"].update(databricks_conn_id=None),
    "huge_retries": lambda entry: entry["cancel"]["args"].update(retry_limit=10**9, retry_delay=1e9),
}


# ---------------------------------------------------------------------- what a REST user does
def get_variable(cluster: AirflowCluster, key: str) -> dict[str, Any] | None:
    """A Variable's JSON value as a REST user reads it (sensitive fields redacted), or None."""
    try:
        found = cluster.api("GET", f"/variables/{quote(key, safe='')}")
    except httpx.HTTPStatusError as e:
        if e.response.status_code == 404:
            return None
        raise
    value: dict[str, Any] = json.loads(found["value"])
    return value


def put_variable(cluster: AirflowCluster, key: str, value: dict[str, Any]) -> None:
    """Create or overwrite a Variable through the REST API, as a user with Variable edit rights."""
    body = {"key": key, "value": json.dumps(value), "description": "edited by hand"}
    if get_variable(cluster, key) is None:
        cluster.api("POST", "/variables", json=body)
    else:
        cluster.api("PATCH", f"/variables/{quote(key, safe='')}", json=body)


def delete_variable(cluster: AirflowCluster, key: str) -> None:
    """Delete a Variable (absent is fine)."""
    if get_variable(cluster, key) is not None:
        cluster.api("DELETE", f"/variables/{quote(key, safe='')}")


def submit_victim(fake: FakeDatabricksProcess) -> int:
    """A run that Airflow never submitted: runs/submit straight to the fake Databricks."""
    body = {
        "run_name": f"victim-{uuid.uuid4().hex[:8]}",
        "tasks": [
            {
                "task_key": "etl",
                "existing_cluster_id": "0000-000000-fake",
                "notebook_task": {"notebook_path": "/Shared/victim"},
            }
        ],
    }
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        response = client.post(f"{fake.url}/api/2.1/jobs/runs/submit", json=body, headers=headers)
    response.raise_for_status()
    return int(response.json()["run_id"])


def cancelled(fake: FakeDatabricksProcess, run: int) -> bool:
    """Whether anyone called runs/cancel for ``run``."""
    return any(e.run_id == run for e in fake.client.cancels())


def live_state(fake: FakeDatabricksProcess, run: int) -> str:
    """The run's life cycle state in the fake."""
    return str(fake.client.get_run(run)["state"]["life_cycle_state"])


# ---------------------------------------------------------------------- a running task
@dataclass
class LiveTask:
    """A running ``resumable_databricks`` task polling its run, and its genuine ledger entry."""

    cluster: AirflowCluster
    fake: FakeDatabricksProcess
    run_name: str = field(default_factory=lambda: f"sys-trust-{uuid.uuid4().hex[:8]}")
    run_id: str = ""
    remote_run: int = 0
    key: str = ""
    #: The entry as a REST user reads it, with the record's token (redacted there) put back from
    #: the task's store record: a forgery identical to what our code wrote but for what it edits.
    entry: dict[str, Any] = field(default_factory=dict)

    def start(self) -> LiveTask:
        self.run_id = self.cluster.trigger(DAG_ID, {"run_name": self.run_name})
        self.remote_run = wait_until(self._submitted, timeout=TIMEOUT, what=f"a run named {self.run_name}")
        self.cluster.wait_for_ti_state(DAG_ID, self.run_id, TASK, {"running"}, timeout=TIMEOUT)
        self.key = ledger_key(TaskIdentity(DAG_ID, self.run_id, TASK, -1))
        entry = wait_until(self._entry_with_id, timeout=TIMEOUT, what="the ledger entry with the run id")
        record = self.cluster.task_state_store_get(DAG_ID, self.run_id, TASK, RECORD_KEY)
        assert record["external_id"] == self.remote_run and record["token"] != "***"
        self.entry = {**entry, "token": record["token"]}
        return self

    def _submitted(self) -> int | None:
        runs = [
            e.run_id
            for e in self.fake.client.submissions()
            if e.body.get("run_name") == self.run_name and e.run_id is not None
        ]
        return runs[0] if runs else None

    def _entry_with_id(self) -> dict[str, Any] | None:
        entry = get_variable(self.cluster, self.key)
        return entry if entry and entry.get("external_id") == self.remote_run else None

    def finish(self) -> None:
        """End the task's run, whatever state it is in, and wait for the DAG run to end."""
        if live_state(self.fake, self.remote_run) in {"PENDING", "RUNNING"}:
            self.fake.client.finish_run(self.remote_run)
        self.cluster.wait_for_dag_run(DAG_ID, self.run_id, timeout=TIMEOUT)


@dataclass
class Forgery:
    """One forged entry: its Variable key, the victim run it names and the value stored."""

    key: str
    victim: int
    value: dict[str, Any]


def forge(live: LiveTask, name: str, victim: int) -> Forgery:
    """A copy of the live entry for the task instance ``forged_dag/forged_run-<name>-…`` and ``victim``."""
    identity = TaskIdentity("forged_dag", f"forged_run-{name}-{uuid.uuid4().hex[:6]}", "forged_task", -1)
    value = json.loads(json.dumps(live.entry))
    value["task"] = {
        "dag_id": identity.dag_id,
        "run_id": identity.run_id,
        "task_id": identity.task_id,
        "map_index": identity.map_index,
    }
    value["external_id"] = victim
    return Forgery(ledger_key(identity), victim, value)


def distrusted_by(cluster: AirflowCluster, key: str) -> list[str]:
    """The components whose custodian logged ``key`` as not trusted."""
    return [
        name
        for name in ("api-server", "scheduler")
        if any(
            UNTRUSTED in line and f"key={key}" in line
            for line in cluster.process_log(name).read_text(errors="replace").splitlines()
        )
    ]


def report(capsys: pytest.CaptureFixture[str], title: str, figures: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\n  [{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture(scope="module")
def live(cluster: AirflowCluster, fake_databricks: FakeDatabricksProcess) -> Iterator[LiveTask]:
    """One running resumable Databricks task whose entry the forgers copy; finished afterwards."""
    fake_databricks.client.clear_faults()
    task = LiveTask(cluster, fake_databricks).start()
    yield task
    task.finish()


@dataclass
class Sweeps:
    """The forgeries after two sweeps, the sealed control, and what was measured."""

    forgeries: dict[str, Forgery]
    control: Forgery
    figures: dict[str, Any]


@pytest.fixture(scope="module")
def swept(
    live: LiveTask, cluster: AirflowCluster, fake_databricks: FakeDatabricksProcess
) -> Iterator[Sweeps]:
    """
    Plant every forged variant, wait until the scheduler's custodian distrusted each (sweep N), then
    plant the sealed control and wait until a later sweep cancelled its victim (sweep N+1 or later).
    """
    forgeries = {}
    for name, edit in VARIANTS.items():
        forgery = forge(live, name, submit_victim(fake_databricks))
        edit(forgery.value)
        forgeries[name] = forgery
    control = forge(live, "sealed-control", submit_victim(fake_databricks))
    try:
        planted_at = time.monotonic()
        for forgery in forgeries.values():
            put_variable(cluster, forgery.key, forgery.value)
        for forgery in forgeries.values():
            cluster.wait_for_process_log_line("scheduler", f"key={forgery.key}", timeout=TIMEOUT)
        distrusted_at = time.monotonic()
        lines = cluster.process_log("scheduler").read_text(errors="replace").splitlines()
        for forgery in forgeries.values():
            assert any(UNTRUSTED in line and f"key={forgery.key}" in line for line in lines), forgery.key
        # The control: the same forgery, sealed with the deployment's key ([api] secret_key).
        with pytest.MonkeyPatch.context() as env:
            env.delenv("AIRFLOW__RESUMABLE__SIGNING_KEY", raising=False)
            env.setenv("AIRFLOW__API__SECRET_KEY", cluster.env["AIRFLOW__API__SECRET_KEY"])
            key = signing_key()
        assert key is not None
        control.value = seal(control.value, purpose="ledger", key=key)
        put_variable(cluster, control.key, control.value)
        wait_until(
            lambda: cancelled(fake_databricks, control.victim),
            timeout=TIMEOUT,
            what="the sealed control's victim cancelled by a later sweep",
        )
        figures = {
            "first_sweep_s": round(distrusted_at - planted_at, 2),
            "second_sweep_s": round(time.monotonic() - planted_at, 2),
        }
        yield Sweeps(forgeries, control, figures)
    finally:
        for forgery in [*forgeries.values(), control]:
            delete_variable(cluster, forgery.key)
            if live_state(fake_databricks, forgery.victim) in {"PENDING", "RUNNING"}:
                fake_databricks.client.finish_run(forgery.victim, "CANCELED")


class TestForgedEntry:
    @pytest.mark.parametrize("variant", list(VARIANTS))
    def test_forged_entry_of_no_task_instance_is_ignored(
        self,
        swept: Sweeps,
        variant: str,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A copied entry naming a task instance that does not exist cancels nothing and stays put."""
        forgery = swept.forgeries[variant]
        left = get_variable(cluster, forgery.key)
        victim_cancelled = cancelled(fake_databricks, forgery.victim)
        report(
            capsys,
            f"forged entry, {variant}",
            {
                **swept.figures,
                "victim_cancelled": int(victim_cancelled),
                "victim_state": live_state(fake_databricks, forgery.victim),
                "entries_left": int(left is not None),
            },
        )
        assert not victim_cancelled
        assert live_state(fake_databricks, forgery.victim) in {"PENDING", "RUNNING"}
        # The REST API redacts the record's token when it reads a Variable back.
        assert left == {**forgery.value, "token": "***"}, "the custodian must not delete or rewrite it"

    def test_the_same_forgery_sealed_with_the_deployment_key_is_acted_on(
        self,
        swept: Sweeps,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Control: sealed with the components' key, the victim is cancelled and the entry deleted."""
        control = swept.control
        wait_until(
            lambda: get_variable(cluster, control.key) is None, timeout=30, what="the control's entry deleted"
        )
        report(
            capsys,
            "forged entry, sealed control",
            {**swept.figures, "victim_cancelled": 1, "entries_left": 0},
        )
        assert fake_databricks.client.get_run(control.victim)["state"]["result_state"] == "CANCELED"


class TestEditedEntry:
    def test_edited_job_id_cancels_only_the_real_run(
        self,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Entry edited to name a victim, then mark failed: the task's own run is cancelled, no other."""
        fake_databricks.client.clear_faults()
        task = LiveTask(cluster, fake_databricks).start()
        victim = submit_victim(fake_databricks)
        try:
            edited = {**task.entry, "external_id": victim}
            put_variable(cluster, task.key, edited)
            stopped_at = time.monotonic()
            cluster.mark_ti(DAG_ID, task.run_id, TASK, "failed")
            wait_until(
                lambda: cancelled(fake_databricks, task.remote_run),
                timeout=TIMEOUT,
                what="the task's run cancelled",
            )
            cancelled_after = round(time.monotonic() - stopped_at, 2)
            # At least two whole-ledger sweeps of the scheduler after the stop (no event marks a
            # sweep that finds nothing to do, and the try may already have deleted the entry).
            interval = float(cluster.env["AIRFLOW__RESUMABLE__CUSTODIAN_INTERVAL_SECONDS"])
            time.sleep(max(0.0, stopped_at + 2 * interval + 1 - time.monotonic()))
            state = cluster.wait_for_dag_run(DAG_ID, task.run_id, timeout=TIMEOUT)
            left = get_variable(cluster, task.key)
            report(
                capsys,
                "edited entry + mark failed",
                {
                    "task_run_cancelled_s": cancelled_after,
                    "victim_cancelled": int(cancelled(fake_databricks, victim)),
                    "victim_state": live_state(fake_databricks, victim),
                    "entries_left": int(left is not None),
                    "distrusted_by": distrusted_by(cluster, task.key),
                    "dag_run": state,
                },
            )
            assert not cancelled(fake_databricks, victim)
            assert live_state(fake_databricks, victim) in {"PENDING", "RUNNING"}
            assert fake_databricks.client.get_run(task.remote_run)["state"]["result_state"] == "CANCELED"
            assert state == "failed"
        finally:
            delete_variable(cluster, task.key)
            if live_state(fake_databricks, victim) in {"PENDING", "RUNNING"}:
                fake_databricks.client.finish_run(victim, "CANCELED")
