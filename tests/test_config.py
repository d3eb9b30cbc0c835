"""The [resumable] configuration section and provider registration."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from airflow_resumable import __version__
from airflow_resumable.get_provider_info import get_provider_info
from airflow_resumable.testing.toy import ToyJobOperator, toy_service


def make(**kwargs: object) -> ToyJobOperator:
    svc = toy_service(f"cfg-{uuid.uuid4().hex[:6]}")
    return ToyJobOperator(task_id="t", service=svc.name, command="x", **kwargs)  # type: ignore[arg-type]


def test_built_in_defaults() -> None:
    """Without configuration the documented defaults apply."""
    op = make()
    assert (op.max_resumes, op.resume_delay.total_seconds(), op.cancel_on_user_stop) == (3, 15.0, True)


def test_configuration_sets_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """[resumable] options, here as environment variables, change the defaults."""
    monkeypatch.setenv("AIRFLOW__RESUMABLE__MAX_RESUMES", "7")
    monkeypatch.setenv("AIRFLOW__RESUMABLE__CANCEL_ON_TIMEOUT", "False")
    monkeypatch.setenv("AIRFLOW__RESUMABLE__RESUME_DELAY_SECONDS", "2.5")
    op = make()
    assert (op.max_resumes, op.cancel_on_timeout, op.resume_delay.total_seconds()) == (7, False, 2.5)


def test_arguments_override_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator argument wins over the configuration."""
    monkeypatch.setenv("AIRFLOW__RESUMABLE__MAX_RESUMES", "7")
    assert make(max_resumes=1).max_resumes == 1


def test_invalid_policy_values_are_refused() -> None:
    """A negative bound or delay fails when the DAG is parsed, naming the argument."""
    with pytest.raises(ValueError, match="max_resumes"):
        make(max_resumes=-1)
    with pytest.raises(ValueError, match="resume_delay"):
        make(resume_delay=-5)


def test_provider_info_declares_the_section() -> None:
    """The provider info carries the version and every [resumable] option with its default."""
    info = get_provider_info()
    assert info["versions"] == [__version__]
    options = info["config"]["resumable"]["options"]
    assert options["max_resumes"]["default"] == "3"


def test_airflow_lists_the_provider() -> None:
    """`airflow providers list` shows airflow-resumable with its version."""
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "plain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert any(line.startswith("airflow-resumable") and __version__ in line for line in out.splitlines())
