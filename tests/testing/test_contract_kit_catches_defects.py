"""The contract kit fails operators that break the contract (a kit that cannot fail proves nothing)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import ResumableJobMixin as CoreResumableJobMixin

from airflow_resumable.testing.contract import ResumableOperatorContract
from airflow_resumable.testing.toy import ToyTaggedJobOperator, toy_service
from tests.test_toy_contract import ToyDriver

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context


class CoreMixinToyOperator(ToyTaggedJobOperator):
    """The toy operator driven by Airflow's core mixin: the stock providers' behaviour."""

    def execute(self, context: Context) -> Any:
        return CoreResumableJobMixin.execute_resumable(self, context)


class _CoreMixinKit(ResumableOperatorContract):
    operator_class = CoreMixinToyOperator

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {"service": cloud.service.name, "command": f"echo {spec_marker}", "poll_interval": 0.001}


@pytest.fixture
def driver() -> ToyDriver:
    return ToyDriver(toy_service(f"core-{uuid.uuid4().hex[:6]}", deduplicates=False))


def test_kit_catches_duplicate_after_crash_before_persist(driver: ToyDriver) -> None:
    """The core mixin submits a second job after a crash between submit and persist; the kit sees it."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_crash_between_submit_and_persist(driver)
    assert len(driver.submitted_ids()) == 2


def test_kit_catches_reconnect_result_quirk(driver: ToyDriver) -> None:
    """The core mixin returns poll_until_complete's None on reconnect; the kit requires get_job_result."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_reconnect_after_worker_crash(driver)
    assert len(driver.submitted_ids()) == 1


def test_kit_catches_spec_change_adoption(driver: ToyDriver) -> None:
    """The core mixin reconnects to a job whose spec the user changed; the kit sees it."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_spec_change_is_not_adopted(driver)
    assert len(driver.submitted_ids()) == 1
