"""
Fixtures of the chaos suite: the views of the fake clouds, and the campaign that runs the cases.

Everything runs on the session's one cluster, fake Databricks and moto controller
(``system_tests/conftest.py``). The campaign runs only the cases pytest selected.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from _chaos_campaign import Campaign, Planned
from _chaos_cases import CaseRun, ChaosContext
from _chaos_clouds import AwsView, CloudView, DatabricksView, LedgerCache

from airflow_resumable.testing.aws import (
    provision_batch,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_resumable.testing.aws import MotoProcess
    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

#: Task instances of chaos cases running at once (the cluster has one executor slot more).
SLOT_LIMIT = 5
#: Cases that inject a fault into a fake cloud's shared endpoint: alone in their domain.
EXCLUSIVE_CASES = frozenset({"storm_5xx", "lost_submit_response"})


@pytest.fixture(scope="session")
def chaos_views(fake_databricks: FakeDatabricksProcess, moto: MotoProcess) -> dict[str, CloudView]:
    """One view per resumable operator; the AWS resources every case shares are created here."""
    databricks, control = fake_databricks.client, moto.client
    databricks_ledger: LedgerCache[Any] = LedgerCache(databricks.ledger)
    aws_ledger: LedgerCache[Any] = LedgerCache(control.ledger)
    batch = provision_batch(moto.url, name="chaos")
    resources: dict[str, dict[str, Any]] = {
        "batch": {"job_queue": batch.job_queue, "job_definition": batch.job_definition},
        "emr_serverless": {"application_id": provision_emr_serverless_application(moto.url, name="chaos")},
        "emr_containers": {"virtual_cluster_id": provision_emr_virtual_cluster(moto.url, name="chaos")},
        "emr_steps": {},
    }

    def new_cluster(name: str) -> str:
        return provision_emr_cluster(moto.url, name=name)

    views: dict[str, CloudView] = {
        key: DatabricksView(key, databricks, databricks_ledger)
        for key in ("databricks_submit_run", "databricks_run_now")
    }
    for key, shared in resources.items():
        views[key] = AwsView(key, control, aws_ledger, shared, new_cluster)
    return views


@pytest.fixture(scope="module")
def campaign(
    request: pytest.FixtureRequest,
    cluster: AirflowCluster,
    chaos_views: dict[str, CloudView],
    chaos_fault_dir: Path,
) -> Iterator[Campaign]:
    """Every selected case of this module, started at once (bounded by slots and fault domains)."""
    stopped = threading.Event()
    context = ChaosContext(cluster, chaos_views, chaos_fault_dir, stopped)
    selected = [
        (str(item.callspec.params["operator"]), str(item.callspec.params["case"]))
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module and hasattr(item, "callspec")
    ]
    planned = [
        Planned(
            case_id=f"{operator}-{case}",
            slots=3 if case == "mapped_sigterm_all" else 1,
            domain=chaos_views[operator].domain,
            exclusive=case in EXCLUSIVE_CASES,
            run=CaseRun(context, operator, case).run,
        )
        for operator, case in selected
    ]
    for dag_id in sorted({CaseRun(context, operator, case).dag_id for operator, case in selected}):
        cluster.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})  # once, not per trigger
    running = Campaign(planned, SLOT_LIMIT, stopped).start()
    try:
        yield running
    finally:
        running.stop()
