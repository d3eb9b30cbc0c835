"""Fixtures for the AWS operators: moto with the lifecycle controller, served in this process."""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING

import pytest

from airflow_resumable.testing.aws import MotoServer, aws_connection_env

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module", autouse=True)
def frozen_heap() -> Iterator[None]:
    """
    Move what earlier tests left on the heap out of the garbage collector's sight.

    With Airflow loaded the heap holds over a million objects, and a full collection then takes
    about a second: enough to eat the whole one-second ``execution_timeout`` of the kit's
    ``test_execution_timeout_cancels`` before the job is even submitted.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """One controller per test module (moto's state is process-wide), ``aws_default`` pointing at it."""
    with MotoServer() as server:
        env = aws_connection_env(server.url, max_attempts=1)
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The module's controller, reset: no resources, jobs, faults or ledger entries; manual lifecycle."""
    moto_server.reset()
    moto_server.set_lifecycle("manual", run_duration=1.0, final_result="succeeded", reads_per_state=1)
    return moto_server
