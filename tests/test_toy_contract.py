"""The contract kit, run on the toy operators: the reference implementation of the contract."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable.testing.contract import ResumableOperatorContract
from airflow_resumable.testing.toy import ToyDriver, ToyJobOperator, ToyTaggedJobOperator, toy_service

if TYPE_CHECKING:
    from pydantic import JsonValue


class TestToyJobOperatorContract(ResumableOperatorContract):
    """A service that deduplicates on the submission token."""

    operator_class = ToyJobOperator

    @pytest.fixture
    def cloud(self) -> ToyDriver:
        return ToyDriver(toy_service(f"idem-{uuid.uuid4().hex[:6]}", deduplicates=True))

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {"service": cloud.service.name, "command": f"echo {spec_marker}", "poll_interval": 0.001}

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """The toy has no stock class: its get_job_result is what a stock execute would return."""
        command = cloud.service.jobs[str(external_id)].command
        return {"return_value": {"job_id": external_id, "output": f"ran {command}"}}


class TestToyTaggedJobOperatorContract(TestToyJobOperatorContract):
    """A service without idempotency: the operator tags jobs and implements find_job."""

    operator_class = ToyTaggedJobOperator

    @pytest.fixture
    def cloud(self) -> ToyDriver:
        return ToyDriver(toy_service(f"tagged-{uuid.uuid4().hex[:6]}", deduplicates=False))
