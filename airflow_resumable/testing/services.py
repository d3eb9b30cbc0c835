"""
The services a production-like Airflow deployment needs in a test: PostgreSQL and Redis.

Development and CI machines run PostgreSQL (``127.0.0.1:5432``, trust auth, user ``postgres``)
and Redis (``127.0.0.1:6379``); point elsewhere with ``AIRFLOW_RESUMABLE_TEST_POSTGRES`` (a
``postgresql://`` URL of a database the user may ``CREATE DATABASE`` from) and
``AIRFLOW_RESUMABLE_TEST_REDIS`` (a ``redis://`` URL).

:func:`fresh_postgres_database` gives every deployment its own database, dropped afterwards, so
tests never see each other's task instances. :func:`require` turns a missing service into one
``pytest.skip`` line on a newcomer's machine, and into a failure under CI (``CI=true``): a CI run
never passes by skipping what it was meant to check.

Example::

    services = require("postgres", "redis")
    with fresh_postgres_database(services.postgres) as sql_alchemy_conn:
        ...
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DEFAULT_POSTGRES",
    "DEFAULT_REDIS",
    "ServiceUrls",
    "fresh_postgres_database",
    "missing_services",
    "require",
    "service_urls",
]

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
_ENV = {"postgres": "AIRFLOW_RESUMABLE_TEST_POSTGRES", "redis": "AIRFLOW_RESUMABLE_TEST_REDIS"}
_DEFAULTS = {"postgres": DEFAULT_POSTGRES, "redis": DEFAULT_REDIS}


@dataclass(frozen=True)
class ServiceUrls:
    """Where the services are: an administrative PostgreSQL URL and a Redis URL."""

    postgres: str
    redis: str


def service_urls() -> ServiceUrls:
    """The configured (or default) URLs of the services."""
    return ServiceUrls(**{name: os.environ.get(env, _DEFAULTS[name]) for name, env in _ENV.items()})


def _reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=timeout):
            return True
    except OSError:
        return False


def missing_services(*names: str) -> list[str]:
    """The services among ``names`` (``postgres``, ``redis``) that do not accept connections."""
    urls = service_urls()
    return [name for name in names if not _reachable(getattr(urls, name))]


def require(*names: str) -> ServiceUrls:
    """
    The services' URLs; skip the calling test (fail it under ``CI=true``) if one is unreachable.

    :raises pytest.skip.Exception: a service is missing on a machine that is not CI.
    :raises pytest.fail.Exception: a service is missing under CI.
    """
    import pytest

    missing = missing_services(*names)
    if missing:
        urls = service_urls()
        where = ", ".join(f"{name} at {getattr(urls, name)} (${_ENV[name]})" for name in missing)
        message = f"needs {where}: start it (docs/deployment.md, 'Running the tests') to run this test"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return service_urls()


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "airflow_test") -> Iterator[str]:
    """
    Create an empty database, yield its SQLAlchemy URL (psycopg2 driver), drop it on exit.

    The drop uses ``WITH (FORCE)`` (PostgreSQL 13+): a process of the deployment that still holds
    a connection does not keep the database alive.

    :param admin_url: a ``postgresql://`` URL whose user may create databases.
    """
    import sqlalchemy

    name = f"{prefix}_{secrets.token_hex(4)}"
    parts = urlsplit(admin_url)
    admin = sqlalchemy.create_engine(
        urlunsplit(("postgresql+psycopg2", parts.netloc, parts.path, parts.query, "")),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", "", ""))
    finally:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
