"""
The "Resumable jobs" page on a real API server: what it shows, to whom, and in a real browser.

One DAG run of ``dags/ui_jobs.py`` makes three real records against the fake Databricks: a
completed job, a checkpointed one (SIGTERM to its worker, then it resumes), and an orphan risk
(marked failed by a user with ``cancel_on_user_stop=False``: its run keeps going, watched by
nobody). The browser test saves the screenshot that ``docs/ui.md`` shows.
"""

from __future__ import annotations

import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity
from airflow_resumable.testing.cluster import wait_until

if TYPE_CHECKING:
    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

pytestmark = pytest.mark.system

DAG_ID = "ui_jobs"
OTHER_DAG_ID = "ui_jobs_other"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "resumable-jobs.png"


@dataclass(frozen=True)
class ThreeJobs:
    """The DAG run holding the three records, and the fake runs of its tasks."""

    run_id: str
    remote: dict[str, int]


@pytest.fixture(scope="module")
def three_jobs(ui_cluster: AirflowCluster, fake_databricks: FakeDatabricksProcess) -> ThreeJobs:
    """Run ``ui_jobs`` until it holds a completed, a checkpointed and an orphan-risk record."""
    began = time.monotonic()
    name = f"ui-{uuid.uuid4().hex[:6]}"
    run_id = ui_cluster.trigger(DAG_ID, {"run_name": name})
    client = fake_databricks.client

    def runs() -> dict[str, int] | None:
        found = {
            str(e.body.get("run_name")).removeprefix(f"{name}-"): int(e.run_id)
            for e in client.submissions()
            if str(e.body.get("run_name", "")).startswith(f"{name}-") and e.run_id is not None
        }
        return found if len(found) == 3 else None

    remote = wait_until(runs, timeout=90, what="the three Databricks runs", check=ui_cluster.check)
    client.finish_run(remote["completed"], "SUCCESS")
    ui_cluster.task_processes(DAG_ID, "checkpointed", run_id).signal_supervisor(signal.SIGTERM)
    ui_cluster.wait_for_ti_state(DAG_ID, run_id, "orphan_risk", {"running"}, timeout=60)
    ui_cluster.wait_for_log_line(DAG_ID, run_id, "orphan_risk", "Resume decision", timeout=60)
    ui_cluster.mark_ti(DAG_ID, run_id, "orphan_risk", "failed")
    ui_cluster.wait_for_ti_state(DAG_ID, run_id, "completed", {"success"}, timeout=60)
    # the checkpointed task resumes after resume_delay (5 s) and polls the same run again
    wait_until(
        lambda: (
            ui_cluster.task_instance(DAG_ID, run_id, "checkpointed")["state"] == "running"
            and _record(ui_cluster, run_id, "checkpointed").resumes == 1
        ),
        timeout=60,
        what="the checkpointed task running again",
        check=ui_cluster.check,
    )
    wait_until(
        lambda: (
            "Not cancelling the remote job"
            in "".join(p.read_text() for p in ui_cluster.task_log_files(DAG_ID, run_id, "orphan_risk"))
        ),
        timeout=30,
        what="the orphan-risk try ending without a cancel",
    )
    _other_dag_record(ui_cluster)
    print(f"\n  [ui] three records made in {time.monotonic() - began:.1f}s")
    return ThreeJobs(run_id, remote)


def _record(cluster: AirflowCluster, run_id: str, task_id: str) -> JobRecord:
    value = cluster.task_state_store_get(DAG_ID, run_id, task_id, RECORD_KEY)
    return JobRecord.from_json(value) if value else JobRecord(generation=1, nonce="", token="")


def _other_dag_record(cluster: AirflowCluster) -> None:
    """A completed record in ``ui_jobs_other`` (written over REST; the DAG stays paused)."""
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    cluster.api("POST", f"/dags/{OTHER_DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None})
    identity = TaskIdentity(OTHER_DAG_ID, run_id, "other")
    record = JobRecord.new_intent(identity, generation=1, fingerprint=None).evolve(
        external_id=4242, phase="completed"
    )
    path = (
        f"/dags/{OTHER_DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/other/state-store/{RECORD_KEY}"
    )
    cluster.api("PUT", path, params={"map_index": -1}, json={"value": record.to_json()})


def _token(cluster: AirflowCluster, user: str, password: str) -> str:
    response = httpx.post(f"{cluster.base_url}/auth/token", json={"username": user, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


def _jobs(cluster: AirflowCluster, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # a credential-less request would be the harness's admin (ui_auth): send an empty cookie instead
    cookies = {} if token else {"_token": "none"}
    return httpx.get(
        f"{cluster.base_url}/resumable/api/jobs", params=params, headers=headers, cookies=cookies
    )


class TestWhoSeesWhat:
    def test_each_user_sees_only_the_dags_they_may_read(
        self, ui_cluster: AirflowCluster, three_jobs: ThreeJobs, ui_passwords: dict[str, str]
    ) -> None:
        """alice reads both DAGs' records; bob only ``ui_jobs_other``'s, even when he asks for the other."""
        alice = _jobs(ui_cluster, _token(ui_cluster, "alice", ui_passwords["alice"])).json()
        bob_token = _token(ui_cluster, "bob", ui_passwords["bob"])
        bob = _jobs(ui_cluster, bob_token).json()
        bob_asking = _jobs(ui_cluster, bob_token, dag_id=DAG_ID).json()
        assert {(j["dag_id"], j["task_id"]) for j in alice["jobs"]} >= {
            (DAG_ID, "completed"),
            (DAG_ID, "checkpointed"),
            (DAG_ID, "orphan_risk"),
            (OTHER_DAG_ID, "other"),
        }
        assert {j["dag_id"] for j in bob["jobs"]} == {OTHER_DAG_ID} and bob["total_entries"] == 1
        assert bob_asking["jobs"] == [] and bob_asking["total_entries"] == 0

    def test_no_credential_no_data(self, ui_cluster: AirflowCluster) -> None:
        """Without a valid login the JSON answers 401 and the page redirects to the login page."""
        assert _jobs(ui_cluster, None).status_code == 401
        page = httpx.get(f"{ui_cluster.base_url}/resumable/jobs", cookies={"_token": "none"})
        assert page.status_code == 307 and "login" in page.headers["location"]

    def test_rows_say_what_happened(
        self, ui_cluster: AirflowCluster, three_jobs: ThreeJobs, ui_passwords: dict[str, str]
    ) -> None:
        """Checkpoints, watcher, phase, attention and the operator's own link, per job."""
        token = _token(ui_cluster, "alice", ui_passwords["alice"])
        rows = {j["task_id"]: j for j in _jobs(ui_cluster, token, dag_id=DAG_ID).json()["jobs"]}
        completed, checkpointed, orphan = rows["completed"], rows["checkpointed"], rows["orphan_risk"]
        assert (completed["phase"], completed["ti_state"], completed["attention"]) == (
            "completed",
            "success",
            [],
        )
        assert completed["external_id"] == str(three_jobs.remote["completed"])
        assert completed["link"] and str(three_jobs.remote["completed"]) in completed["link"]
        assert (checkpointed["checkpoints"], checkpointed["last_checkpoint_signal"]) == (1, "SIGTERM")
        assert checkpointed["watched_by"] == "worker" and checkpointed["attention"] == []
        assert (orphan["phase"], orphan["ti_state"], orphan["watched_by"]) == (
            "submitted",
            "failed",
            "nobody",
        )
        assert orphan["attention"] and "may still run" in orphan["attention"][0]
        attention = _jobs(ui_cluster, token, dag_id=DAG_ID, attention="1").json()
        assert [j["task_id"] for j in attention["jobs"]] == ["orphan_risk"]


class TestInTheBrowser:
    def test_log_in_open_the_page_and_screenshot_it(
        self,
        ui_cluster: AirflowCluster,
        three_jobs: ThreeJobs,
        ui_passwords: dict[str, str],
        chromium: tuple[str, str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A real chromium logs in as alice, finds the three rows and saves the docs' screenshot."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        options = webdriver.ChromeOptions()
        options.binary_location = chromium[0]
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1500,900",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium[1]))
        wait = WebDriverWait(driver, 30)
        try:
            driver.get(f"{ui_cluster.base_url}/auth/login/")
            wait.until(expected_conditions.presence_of_element_located((By.NAME, "username")))
            driver.find_element(By.NAME, "username").send_keys("alice")
            driver.find_element(By.NAME, "password").send_keys(ui_passwords["alice"])
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(lambda d: any(c["name"] == "_token" for c in d.get_cookies()))

            began = time.monotonic()
            driver.get(f"{ui_cluster.base_url}/resumable/jobs?dag_id={DAG_ID}")
            wait.until(expected_conditions.presence_of_element_located((By.ID, "jobs")))
            loaded = time.monotonic() - began
            rows = {
                row.get_attribute("data-task"): row for row in driver.find_elements(By.CSS_SELECTOR, "tr.job")
            }
            assert set(rows) == {"completed", "checkpointed", "orphan_risk"}
            assert rows["orphan_risk"].get_attribute("data-attention") == "yes"
            assert rows["completed"].get_attribute("data-attention") == "no"
            assert "SIGTERM" in rows["checkpointed"].find_element(By.CSS_SELECTOR, "td.checkpoints").text
            link = rows["completed"].find_element(By.CSS_SELECTOR, "a").get_attribute("href")
            assert link and str(three_jobs.remote["completed"]) in link

            # the same page inside the Airflow UI (Browse > Resumable jobs): the docs' screenshot
            driver.get(f"{ui_cluster.base_url}/plugin/resumable-jobs")
            frame = wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "iframe")))
            driver.switch_to.frame(frame)
            wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "tr.job")))
            driver.switch_to.default_content()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(SCREENSHOT))
        finally:
            driver.quit()
        with capsys.disabled():
            print(f"\n  [ui] page loaded in the browser in {loaded * 1000:.0f} ms; screenshot {SCREENSHOT}")
