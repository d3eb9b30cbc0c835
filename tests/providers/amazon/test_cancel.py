"""The custodian's AWS cancellers: a connection is required, and every call has a deadline."""

from __future__ import annotations

import importlib
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from airflow_resumable.custodian import CANCELLERS
from airflow_resumable.exceptions import RecipeRefusedError
from airflow_resumable.providers.amazon._cancel import cancel_batch_job, cancel_client
from airflow_resumable.testing.aws import aws_connection_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Every AWS canceller with the resource arguments of its recipe and a valid external id.
AWS_RECIPES: dict[str, tuple[Any, dict[str, Any]]] = {
    "aws_batch_job": ("job-1", {}),
    "aws_emr_serverless_job_run": ("run-1", {"application_id": "app-1"}),
    "aws_emr_container_job_run": ("run-1", {"virtual_cluster_id": "vc-1"}),
    "aws_emr_steps": (["s-1"], {"cluster_id": "j-1"}),
    "aws_ecs_task": ("arn:aws:ecs:us-east-1:123456789012:task/c/1", {"cluster": "c"}),
    "aws_glue_job_run": ("jr_1", {"job_name": "etl"}),
    "aws_sagemaker_training_job": ("train-1", {}),
    "aws_sagemaker_processing_job": ("process-1", {}),
    "aws_sfn_execution": ("arn:aws:states:us-east-1:123456789012:execution:sm:x", {}),
}
CALL_TIMEOUT = "AIRFLOW__RESUMABLE__CUSTODIAN_CALL_TIMEOUT_SECONDS"


def canceller(name: str) -> Callable[..., None]:
    """The function registered under ``name``."""
    module, function = CANCELLERS[name].split(":", 1)
    return getattr(importlib.import_module(module), function)


def aws_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str, url: str, config_kwargs: dict[str, Any] | None = None
) -> None:
    """An AWS connection ``conn_id`` whose endpoint is ``url``, with optional ``config_kwargs``."""
    env = aws_connection_env(url, conn_id)
    if config_kwargs is not None:
        connection = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])
        connection["extra"]["config_kwargs"] = config_kwargs
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def no_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any AWS hook (hence any client or credential lookup) is built."""

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an AWS hook was built for a refused recipe")

    monkeypatch.setattr(AwsBaseHook, "__init__", tripwire)


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any boto3 client is built through an AWS hook."""

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a boto3 client was built for a refused recipe")

    monkeypatch.setattr(AwsBaseHook, "get_client_type", tripwire)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung cloud)."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


class TestRegistry:
    def test_every_aws_canceller_is_covered_here(self) -> None:
        """A newly registered AWS canceller must be added to this module's table."""
        assert {name for name in CANCELLERS if name.startswith("aws_")} == set(AWS_RECIPES)


class TestNoAmbientCredentials:
    @pytest.mark.usefixtures("no_hook")
    @pytest.mark.parametrize("name", sorted(AWS_RECIPES))
    @pytest.mark.parametrize("conn_id", [None, "", "  "], ids=["none", "empty", "blank"])
    def test_a_recipe_without_a_connection_is_refused_before_any_hook(
        self, name: str, conn_id: str | None
    ) -> None:
        """aws_conn_id None or empty raises RecipeRefusedError; no hook, client or credential lookup."""
        external_id, arguments = AWS_RECIPES[name]
        with pytest.raises(RecipeRefusedError, match="aws_conn_id"):
            canceller(name)(external_id, aws_conn_id=conn_id, **arguments)

    @pytest.mark.usefixtures("no_hook")
    @pytest.mark.parametrize("name", sorted(AWS_RECIPES))
    def test_a_recipe_that_names_no_connection_is_refused(self, name: str) -> None:
        """A recipe without the aws_conn_id key at all is refused the same way."""
        external_id, arguments = AWS_RECIPES[name]
        with pytest.raises(RecipeRefusedError):
            canceller(name)(external_id, **arguments)

    @pytest.mark.usefixtures("no_client")
    @pytest.mark.parametrize("name", sorted(AWS_RECIPES))
    def test_a_connection_that_does_not_exist_is_refused_before_any_client(self, name: str) -> None:
        """The AWS hooks treat an unknown connection as none at all: refused, naming the connection."""
        external_id, arguments = AWS_RECIPES[name]
        with pytest.raises(RecipeRefusedError, match="no_such_connection"):
            canceller(name)(external_id, aws_conn_id="no_such_connection", **arguments)

    @pytest.mark.usefixtures("no_hook")
    def test_a_region_that_is_no_string_is_refused(self) -> None:
        """A forged region (a list here) is refused before a hook is built."""
        with pytest.raises(RecipeRefusedError, match="region_name"):
            cancel_client("batch", "aws_default", ["us-east-1"], canceller="aws_batch_job")


class TestDeadline:
    def test_the_client_has_the_deadline_and_keeps_the_connections_settings(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Timeouts and retries come from the option (they win); the connection's proxies are kept."""
        monkeypatch.setenv(CALL_TIMEOUT, "12")
        proxies = {"https": "http://proxy.example:3128"}
        config = {
            "proxies": proxies,
            "connect_timeout": 900,
            "read_timeout": 900,
            "retries": {"max_attempts": 9},
        }
        aws_connection(monkeypatch, "aws_custodian", "http://127.0.0.1:9", config)
        client = cancel_client("batch", "aws_custodian", None, canceller="aws_batch_job")
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (2.0, 4.0)
        assert client.meta.config.retries == {"total_max_attempts": 2, "mode": "standard"}
        assert client.meta.config.proxies == proxies

    def test_the_default_deadline_is_thirty_seconds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """At the default 30 s: 5 s to connect and 10 s to read, per attempt, two attempts."""
        aws_connection(monkeypatch, "aws_custodian", "http://127.0.0.1:9")
        client = cancel_client("sagemaker", "aws_custodian", "eu-west-1", canceller="x")
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5.0, 10.0)
        assert client.meta.region_name == "eu-west-1"

    def test_a_hung_endpoint_fails_the_cancel_within_the_deadline(
        self, monkeypatch: pytest.MonkeyPatch, silent_endpoint: str
    ) -> None:
        """Against a cloud that never answers, the canceller raises after about the option's seconds."""
        monkeypatch.setenv(CALL_TIMEOUT, "2")
        aws_connection(monkeypatch, "aws_hung", silent_endpoint)
        started = time.monotonic()
        with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
            cancel_batch_job("job-1", aws_conn_id="aws_hung")
        assert time.monotonic() - started < 8.0  # botocore's defaults: 60 s per read, several attempts
