"""Spec validation before any HTTP call, the spec fingerprint, and the idempotency token."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable.exceptions import InvalidJobSpecError
from airflow_resumable.providers.databricks import (
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)
from airflow_resumable.providers.databricks._spec import (
    check_run_now_spec,
    check_submit_run_spec,
    databricks_idempotency_token,
    spec_fingerprint,
)
from tests.providers.databricks.helpers import HOOK_RETRY_ARGS, task_context

if TYPE_CHECKING:
    from airflow_resumable.testing.databricks import FakeDatabricks

NOTEBOOK = {"notebook_path": "/Shared/etl"}
OP = "Op(task_id='t')"


def _submit(json: Any = None, **named: Any) -> dict[str, Any]:
    return check_submit_run_spec(OP, json, named)


def _run_now(json: Any = None, **named: Any) -> dict[str, Any]:
    return check_run_now_spec(OP, json, named)


class TestSubmitRunSpec:
    """runs/submit arguments."""

    @pytest.mark.parametrize(
        ("json", "named", "argument"),
        [
            (None, {}, "tasks"),
            ({"run_name": "x"}, {"new_cluster": {"spark_version": "15.4"}}, "tasks"),
            ({"tasks": []}, {}, "tasks"),
            ({"tasks": {"task_key": "a"}}, {}, "json['tasks']"),
            (None, {"tasks": "a"}, "tasks"),
            (None, {"tasks": [{"task_key": "a"}, "b"]}, "tasks[1]"),
            (None, {"tasks": [{"notebook_task": NOTEBOOK}]}, "tasks[0]"),
            (None, {"tasks": [{"task_key": "a"}, {"task_key": "a"}]}, "tasks[1]"),
            (None, {"notebook_task": "/Shared/etl"}, "notebook_task"),
            ({"spark_python_task": ["x"]}, {}, "json['spark_python_task']"),
            (None, {"notebook_task": NOTEBOOK, "timeout_seconds": "soon"}, "timeout_seconds"),
            (None, {"notebook_task": NOTEBOOK, "timeout_seconds": -1}, "timeout_seconds"),
            ({"notebook_task": NOTEBOOK, "timeout_seconds": 1.5}, {}, "json['timeout_seconds']"),
            (None, {"notebook_task": NOTEBOOK, "timeout_seconds": True}, "timeout_seconds"),
            (None, {"notebook_task": NOTEBOOK, "run_name": 7}, "run_name"),
            (None, {"notebook_task": NOTEBOOK, "libraries": {"jar": "x"}}, "libraries"),
            (None, {"notebook_task": NOTEBOOK, "existing_cluster_id": 12}, "existing_cluster_id"),
            (None, {"notebook_task": {"notebook_path": object()}}, "notebook_task['notebook_path']"),
            ("[1, 2]", {}, "json"),
            ("not json {", {}, "json"),
            (None, {"dbt_task": {"commands": ["dbt run"]}}, "git_source"),
            (None, {"pipeline_task": {"pipeline_id": "p", "pipeline_name": "n"}}, "pipeline_task"),
            (None, {"notebook_task": NOTEBOOK, "idempotency_token": "x" * 65}, "idempotency_token"),
            (None, {"notebook_task": NOTEBOOK, "idempotency_token": "has space"}, "idempotency_token"),
            (None, {"notebook_task": NOTEBOOK, "idempotency_token": ""}, "idempotency_token"),
            ({"notebook_task": NOTEBOOK, "idempotency_token": 42}, {}, "json['idempotency_token']"),
        ],
    )
    def test_invalid_spec_names_the_argument(self, json: Any, named: dict[str, Any], argument: str) -> None:
        """Each invalid spec raises InvalidJobSpecError whose message names the argument at fault."""
        with pytest.raises(
            InvalidJobSpecError, match=rf"^Op\(task_id='t'\): argument {re.escape(argument)} "
        ):
            _submit(json, **named)

    @pytest.mark.parametrize(
        ("json", "named"),
        [
            (None, {"notebook_task": NOTEBOOK}),
            ({"tasks": [{"task_key": "a", "notebook_task": NOTEBOOK}]}, {}),
            ('{"spark_python_task": {"python_file": "dbfs:/x.py"}}', {}),
            ("{'pipeline_task': {'pipeline_id': 'p'}}", {}),
            ({"notebook_task": NOTEBOOK, "timeout_seconds": "3600"}, {"timeout_seconds": 3600}),
            ({"run_name": "same"}, {"run_name": "same", "sql_task": {"query": {"query_id": "q"}}}),
            (None, {"notebook_task": NOTEBOOK, "idempotency_token": "manual__2026-11-25T21:00:00+00:00"}),
        ],
    )
    def test_valid_spec_is_merged(self, json: Any, named: dict[str, Any]) -> None:
        """Valid specs pass; equal values given twice (3600 and "3600") are no conflict."""
        merged = _submit(json, **named)
        assert any(key == "tasks" or key.endswith("_task") for key in merged)

    @pytest.mark.parametrize(
        ("json", "named", "key"),
        [
            ({"run_name": "a", "notebook_task": NOTEBOOK}, {"run_name": "b"}, "run_name"),
            ({"notebook_task": {"notebook_path": "/a"}}, {"notebook_task": NOTEBOOK}, "notebook_task"),
        ],
    )
    def test_named_argument_wins_over_json(self, json: Any, named: dict[str, Any], key: str) -> None:
        """A key in ``json`` and a named argument with another value: the named one is sent, as in stock."""
        assert _submit(json, **named)[key] == named[key]


class TestRunNowSpec:
    """run-now arguments."""

    @pytest.mark.parametrize(
        ("json", "named", "argument"),
        [
            (None, {}, "job_id/job_name"),
            (None, {"job_id": 1, "job_name": "nightly"}, "job_id/job_name"),
            ({"job_name": "nightly"}, {"job_id": 1}, "job_id/job_name"),
            (None, {"job_id": "abc"}, "job_id"),
            (None, {"job_id": 0}, "job_id"),
            ({"job_id": True}, {}, "json['job_id']"),
            (None, {"job_name": "  "}, "job_name"),
            (None, {"job_id": 1, "notebook_params": ["a"]}, "notebook_params"),
            (None, {"job_id": 1, "python_params": "a b"}, "python_params"),
            (
                None,
                {"job_id": 1, "job_parameters": {"a": "1"}, "notebook_params": {"b": "2"}},
                "job_parameters",
            ),
            (None, {"job_id": 1, "idempotency_token": "é" * 10}, "idempotency_token"),
        ],
    )
    def test_invalid_spec_names_the_argument(self, json: Any, named: dict[str, Any], argument: str) -> None:
        """Each invalid run-now spec raises InvalidJobSpecError naming the argument."""
        with pytest.raises(InvalidJobSpecError, match=rf"argument {re.escape(argument)} "):
            _run_now(json, **named)

    @pytest.mark.parametrize(
        ("json", "named"),
        [
            (None, {"job_id": 42}),
            (None, {"job_id": "42", "job_parameters": {"day": "2026-11-25"}}),
            ({"job_name": "nightly", "notebook_params": {"a": "1"}}, {}),
        ],
    )
    def test_valid_spec(self, json: Any, named: dict[str, Any]) -> None:
        """Exactly one of job_id / job_name, with well-typed parameters, passes."""
        assert _run_now(json, **named)


class TestFingerprint:
    """The spec hash that detects a changed spec between tries."""

    def test_ignores_the_idempotency_token(self) -> None:
        """A user's token (even one templated per try) does not change the fingerprint."""
        one = spec_fingerprint("runs/submit", {"notebook_task": NOTEBOOK, "idempotency_token": "a"})
        two = spec_fingerprint("runs/submit", {"notebook_task": NOTEBOOK, "idempotency_token": "b"})
        assert one == two

    def test_numbers_hash_as_the_stock_operator_sends_them(self) -> None:
        """3600 and "3600" are the same submission (the stock normaliser sends strings)."""
        one = spec_fingerprint("runs/submit", {"notebook_task": NOTEBOOK, "timeout_seconds": 3600})
        two = spec_fingerprint("runs/submit", {"notebook_task": NOTEBOOK, "timeout_seconds": "3600"})
        assert one == two

    def test_changes_with_the_spec_and_the_endpoint(self) -> None:
        """A different parameter, or the other endpoint, is a different spec."""
        base = spec_fingerprint("run-now", {"job_id": 1, "job_parameters": {"day": "1"}})
        assert base != spec_fingerprint("run-now", {"job_id": 1, "job_parameters": {"day": "2"}})
        assert base != spec_fingerprint("runs/submit", {"job_id": 1, "job_parameters": {"day": "1"}})
        assert base.startswith("sha256:")


class TestIdempotencyToken:
    """The token sent to Databricks."""

    def test_our_token_alone(self) -> None:
        """Without a user token, the mixin's submission token goes as it is."""
        assert databricks_idempotency_token("ar-abc", None) == "ar-abc"

    def test_user_token_is_a_namespace(self) -> None:
        """A user token is combined with ours: readable prefix, hash, <= 64 chars of [A-Za-z0-9_-]."""
        token = databricks_idempotency_token("ar-" + "1" * 40, "manual__2026-11-25T21:00:00+00:00")
        assert token is not None and len(token) <= 64
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert token.startswith("manual__2026-11-25T2-")

    def test_user_token_with_another_generation_differs(self) -> None:
        """The same user token under two generations' tokens gives two Databricks tokens."""
        assert databricks_idempotency_token("ar-1", "nightly") != databricks_idempotency_token(
            "ar-2", "nightly"
        )

    def test_stock_code_path_keeps_the_user_token(self) -> None:
        """Without our token (the stock engine ran), the user's token is sent unchanged, as in stock."""
        assert databricks_idempotency_token(None, "nightly") == "nightly"
        assert databricks_idempotency_token(None, None) is None


class TestNoHttpBeforeValidation:
    """An invalid spec fails the task before any call to Databricks."""

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"json": {"run_name": "x"}},
            {"tasks": {"task_key": "a"}},
            {"notebook_task": NOTEBOOK, "timeout_seconds": "an hour"},
            {"json": "not json {", "notebook_task": NOTEBOOK},
            {"notebook_task": NOTEBOOK, "idempotency_token": "t" * 70},
        ],
    )
    def test_submit_run(self, fake: FakeDatabricks, kwargs: dict[str, Any]) -> None:
        """ResumableDatabricksSubmitRunOperator raises InvalidJobSpecError with an empty ledger."""
        op = ResumableDatabricksSubmitRunOperator(
            task_id="t", databricks_retry_args=HOOK_RETRY_ARGS, **kwargs
        )
        context = task_context()
        with pytest.raises(InvalidJobSpecError):
            op.execute(context)
        assert fake.ledger() == []
        assert context["task_state_store"].values == {}

    @pytest.mark.parametrize(
        "kwargs",
        [{}, {"job_id": 1, "job_name": "nightly"}, {"job_id": "x"}, {"job_name": "n", "jar_params": "a"}],
    )
    def test_run_now(self, fake: FakeDatabricks, kwargs: dict[str, Any]) -> None:
        """ResumableDatabricksRunNowOperator raises InvalidJobSpecError with an empty ledger."""
        op = ResumableDatabricksRunNowOperator(task_id="t", databricks_retry_args=HOOK_RETRY_ARGS, **kwargs)
        with pytest.raises(InvalidJobSpecError):
            op.execute(task_context())
        assert fake.ledger() == []

    def test_invalid_spec_is_not_retried(self) -> None:
        """InvalidJobSpecError is an AirflowFailException: the task fails without using a retry."""
        from airflow.sdk.exceptions import AirflowFailException

        assert issubclass(InvalidJobSpecError, AirflowFailException)
