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


class TestAirflowConfigList:
    """`airflow config list --section resumable` shows each option with its default and description."""

    @staticmethod
    def listing(tmp_path: object, *flags: str, env: dict[str, str] | None = None) -> str:
        import os

        environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        environment.update({"AIRFLOW_HOME": str(tmp_path), **(env or {})})
        return subprocess.run(
            [sys.executable, "-m", "airflow", "config", "list", "--section", "resumable", *flags],
            capture_output=True,
            text=True,
            check=True,
            env=environment,
        ).stdout

    def test_every_option_shows_its_default_and_description(self, tmp_path: object) -> None:
        """With --show-values every option's value is its built-in default, under its description."""
        from airflow_resumable._config import OPTIONS, default_text

        out = self.listing(tmp_path, "--show-values", "--include-descriptions")
        values = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line and line[0] != "#")
        assert values == {name: default_text(option) for name, option in OPTIONS.items()}
        for name, option in OPTIONS.items():
            assert f"# {option.description} Default: {default_text(option)}." in out, name

    def test_descriptions_say_the_default_even_with_values_hidden(self, tmp_path: object) -> None:
        """Airflow 3.3 hides values unless asked; the description still names the default."""
        out = self.listing(tmp_path, "--include-descriptions")
        assert "# resume_delay_seconds = " in out.splitlines()  # the value itself is hidden
        assert "Default: 15.0. Operator argument: resume_delay." in out
        assert "Default: 10.0. Deployment-wide (no operator argument)." in out

    def test_a_configured_value_is_listed_instead(self, tmp_path: object) -> None:
        """An environment variable's value replaces the default in the listing."""
        out = self.listing(tmp_path, "--show-values", env={"AIRFLOW__RESUMABLE__MAX_RESUMES": "5"})
        assert "max_resumes = 5" in out.splitlines()
