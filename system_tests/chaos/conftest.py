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
from _chaos_clouds import CHAOS_REALISM, AwsView, CloudView, DatabricksView, LedgerCache

from airflow_resumable.testing.aws import (
    provision_batch,
    provision_ecs,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
    provision_sagemaker,
    provision_state_machine,
)
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_resumable.testing.aws import MotoProcess
    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

#: Task instances of chaos cases running at once (the cluster has one executor slot more).
SLOT_LIMIT = 5
#: The resource every deferrable case uses (``_chaos_campaign``).
TRIGGERER = "triggerer"
#: Cases that inject a fault into a fake cloud's shared endpoint: alone in their domain.
DOMAIN_EXCLUSIVE_CASES = frozenset({"storm_5xx", "lost_submit_response"})
#: Cases that restart the triggerer: no other deferrable case runs meanwhile.
TRIGGERER_EXCLUSIVE_CASES = frozenset({"deferred_triggerer_restart"})


def resources(run: CaseRun, domain: str) -> tuple[frozenset[str], frozenset[str]]:
    """What a case uses (its fault domain, the triggerer if it defers) and what it needs alone."""
    uses = {domain} | ({TRIGGERER} if run.dag_id.endswith("_deferrable") else set())
    exclusive: set[str] = set()
    if run.case in DOMAIN_EXCLUSIVE_CASES:
        exclusive.add(domain)
    if run.case in TRIGGERER_EXCLUSIVE_CASES:
        exclusive.add(TRIGGERER)
    return frozenset(uses), frozenset(exclusive)


@pytest.fixture(scope="session")
def chaos_views(fake_databricks: FakeDatabricksProcess, moto: MotoProcess) -> dict[str, CloudView]:
    """One view per resumable operator; the AWS resources every case shares are created here."""
    databricks, control = fake_databricks.client, moto.client
    databricks_ledger: LedgerCache[Any] = LedgerCache(databricks.ledger)
    aws_ledger: LedgerCache[Any] = LedgerCache(control.ledger)
    batch = provision_batch(moto.url, name="chaos")
    ecs = provision_ecs(moto.url, name="chaos")
    sagemaker = provision_sagemaker(moto.url, name="chaos")
    sagemaker_conf = {
        "sagemaker_input_uri": sagemaker.input_uri,
        "sagemaker_output_uri": sagemaker.output_uri,
        "sagemaker_image_uri": sagemaker.image_uri,
    }
    resources: dict[str, dict[str, Any]] = {
        "batch": {"job_queue": batch.job_queue, "job_definition": batch.job_definition},
        "emr_serverless": {"application_id": provision_emr_serverless_application(moto.url, name="chaos")},
        "emr_containers": {"virtual_cluster_id": provision_emr_virtual_cluster(moto.url, name="chaos")},
        "emr_steps": {},
        "ecs": {"cluster": ecs.cluster, "task_definition": ecs.task_definition},
        "glue": {},
        "sagemaker_training": sagemaker_conf,
        "sagemaker_processing": sagemaker_conf,
        "step_function": {"state_machine_arn": provision_state_machine(moto.url, name="chaos")},
    }

    def new_cluster(name: str) -> str:
        return provision_emr_cluster(moto.url, name=name)

    views: dict[str, CloudView] = {
        key: DatabricksView(key, databricks, databricks_ledger)
        for key in ("databricks_submit_run", "databricks_run_now", "databricks_notebook")
    }
    for key, shared in resources.items():
        views[key] = AwsView(key, control, aws_ledger, shared, new_cluster)
    return views


@pytest.fixture(scope="module")
def unkind_clouds(fake_databricks: FakeDatabricksProcess, moto: MotoProcess) -> Iterator[Realism]:
    """:data:`CHAOS_REALISM` in both fakes while a chaos module runs; the fakes' default after."""
    for fake in (fake_databricks.client, moto.client):
        fake.set_realism(CHAOS_REALISM)
    try:
        yield CHAOS_REALISM
    finally:
        for fake in (fake_databricks.client, moto.client):
            fake.set_realism(Realism.documented())


@pytest.fixture(scope="module")
def campaign(
    request: pytest.FixtureRequest,
    cluster: AirflowCluster,
    chaos_views: dict[str, CloudView],
    chaos_fault_dir: Path,
    unkind_clouds: Realism,
) -> Iterator[Campaign]:
    """
    Every selected case of this module, started at once (bounded by slots and resources).

    A module may set ``CASE_RUN`` (a :class:`CaseRun` subclass with cases of its own) and
    ``SLOT_LIMIT``.
    """
    case_run: type[CaseRun] = getattr(request.module, "CASE_RUN", CaseRun)
    slot_limit: int = getattr(request.module, "SLOT_LIMIT", SLOT_LIMIT)
    stopped = threading.Event()
    context = ChaosContext(cluster, chaos_views, chaos_fault_dir, stopped)
    selected = [
        (str(item.callspec.params["operator"]), str(item.callspec.params["case"]))
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module and hasattr(item, "callspec")
    ]
    planned = []
    for operator, case in selected:
        run = case_run(context, operator, case)
        uses, exclusive = resources(run, chaos_views[operator].domain)
        planned.append(
            Planned(
                case_id=f"{operator}-{case}",
                slots=3 if case == "mapped_sigterm_all" else 1,
                uses=uses,
                exclusive=exclusive,
                run=run.run,
            )
        )
    for dag_id in sorted({case_run(context, operator, case).dag_id for operator, case in selected}):
        cluster.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})  # once, not per trigger
    running = Campaign(planned, slot_limit, stopped).start()
    try:
        yield running
    finally:
        running.stop()
