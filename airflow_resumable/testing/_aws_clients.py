"""
Boto3 clients and Airflow connections that point at a moto controller: the leaf of the fakes' AWS
modules (it imports none of them), so that every job kind can provision through it.

Private: import the public names from :mod:`airflow_resumable.testing.aws`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

__all__ = [
    "FAKE_CREDENTIALS",
    "TEST_ACCOUNT_ID",
    "TEST_ROLE_ARN",
    "aws_client",
    "aws_connection_env",
    "forget_clients",
]

#: moto's default account, which it uses for the fake credentials below.
TEST_ACCOUNT_ID = "123456789012"
#: An execution role in that account (EMR Serverless refuses roles of other accounts).
TEST_ROLE_ARN = f"arn:aws:iam::{TEST_ACCOUNT_ID}:role/airflow-resumable-job"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_CLIENTS: dict[tuple[str, str, str, str], Any] = {}
_SESSIONS: dict[str, Any] = {}  # one per region: its loader parses each service model once
_CLIENTS_LOCK = threading.Lock()


def aws_client(url: str, service: str, region: str = "us-east-1", **config: Any) -> Any:
    """
    A boto3 client for ``service`` that talks to the controller at ``url`` with fake credentials.

    :param url: the controller's base url.
    :param service: boto3 service name (``batch``, ``emr``, ``emr-serverless``, ``emr-containers``).
    :param region: the region.
    :param config: ``botocore.config.Config`` arguments (e.g. ``retries={"total_max_attempts": 1}``).
    :return: a client, cached per arguments (building one takes a tenth of a second).
    """
    import boto3
    from botocore.config import Config

    key = (url, service, region, json.dumps(config, sort_keys=True, default=repr))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            if region not in _SESSIONS:
                _SESSIONS[region] = boto3.session.Session(region_name=region, **FAKE_CREDENTIALS)
            _CLIENTS[key] = _SESSIONS[region].client(
                service, endpoint_url=url, config=Config(**config) if config else None
            )
        return _CLIENTS[key]


def forget_clients(url: str) -> None:
    """Drop the cached clients of a controller that stopped."""
    with _CLIENTS_LOCK:
        for key in [key for key in _CLIENTS if key[0] == url]:
            del _CLIENTS[key]


def aws_connection_env(
    url: str, conn_id: str = "aws_default", region: str = "us-east-1", *, max_attempts: int | None = None
) -> dict[str, str]:
    """
    Environment variables that point an Airflow AWS connection (and bare boto3) at the controller.

    :param url: the controller's base url; goes into the connection's ``endpoint_url`` extra.
    :param conn_id: the Airflow connection id.
    :param region: region of the connection and of ``AWS_DEFAULT_REGION``.
    :param max_attempts: botocore's total attempts per call (``total_max_attempts``); None keeps
        botocore's default retries, whose back-off sleeps. Tests that inject faults pass 1.
    :return: ``AIRFLOW_CONN_<CONN_ID>`` plus fake ``AWS_*`` credentials.
    """
    extra: dict[str, Any] = {"endpoint_url": url, "region_name": region}
    if max_attempts is not None:
        extra["config_kwargs"] = {"retries": {"mode": "standard", "total_max_attempts": max_attempts}}
    connection = {
        "conn_type": "aws",
        "login": FAKE_CREDENTIALS["aws_access_key_id"],
        "password": FAKE_CREDENTIALS["aws_secret_access_key"],
        "extra": extra,
    }
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection),
        "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": region,
    }
