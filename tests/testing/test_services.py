"""The services helpers: skip or fail without PostgreSQL or Redis, a fresh database per deployment."""

from __future__ import annotations

import pytest
import sqlalchemy

from airflow_resumable.testing.cluster import free_port
from airflow_resumable.testing.services import (
    fresh_postgres_database,
    missing_services,
    require,
    service_urls,
)


@pytest.fixture
def no_postgres(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the PostgreSQL URL at a port nothing listens on."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setenv("AIRFLOW_RESUMABLE_TEST_POSTGRES", url)
    return url


def test_missing_service_skips_with_one_line_outside_ci(
    no_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CI a missing service skips the test, naming the service, its URL and the variable."""
    monkeypatch.delenv("CI", raising=False)
    assert missing_services("postgres") == ["postgres"]
    with pytest.raises(pytest.skip.Exception) as skipped:
        require("postgres")
    message = str(skipped.value)
    assert no_postgres in message and "AIRFLOW_RESUMABLE_TEST_POSTGRES" in message and "\n" not in message


def test_missing_service_fails_under_ci(no_postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI=true a missing service is a failure, never a skip."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as stopped:
        require("postgres")
    assert stopped.type is pytest.fail.Exception, "under CI a missing service must not skip"
    assert "CI=true and needs postgres" in str(stopped.value)


def test_fresh_database_is_created_empty_and_dropped() -> None:
    """Each deployment gets its own empty database, which is gone after the block."""
    admin_url = require("postgres").postgres
    with fresh_postgres_database(admin_url, prefix="airflow_unit") as url:
        assert url.startswith("postgresql+psycopg2://")
        name = url.rsplit("/", 1)[1]
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as connection:
            tables = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).scalar()
        engine.dispose()
        assert tables == 0
    admin = sqlalchemy.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with admin.connect() as connection:
        left = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
    admin.dispose()
    assert left == 0


def test_defaults_are_the_machines_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without overrides the URLs are the local PostgreSQL and Redis on their standard ports."""
    monkeypatch.delenv("AIRFLOW_RESUMABLE_TEST_POSTGRES", raising=False)
    monkeypatch.delenv("AIRFLOW_RESUMABLE_TEST_REDIS", raising=False)
    urls = service_urls()
    assert (urls.postgres, urls.redis) == (
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "redis://127.0.0.1:6379/0",
    )
