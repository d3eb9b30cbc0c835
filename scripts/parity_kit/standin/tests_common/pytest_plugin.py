"""
``tests_common.pytest_plugin``, the stand-in: Airflow's logging configured once per session and a
``caplog`` that captures structlog events (as upstream's ``_ensure_configured_logging`` and
``override_caplog``), the ``db_test`` marker, and the database fixtures the upstream operator tests
ask for. Each of those skips its test with a ``needs tests_common:`` reason: upstream runs them
against a migrated metadata database and its DAG bundles, which this stand-in does not imitate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import structlog.testing

from tests_common import needs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, MutableMapping

#: Fixtures of upstream's plugin that need the metadata database.
DATABASE_FIXTURES = (
    "session",
    "dag_maker",
    "create_task_instance",
    "create_task_instance_of_operator",
    "clean_dags_dagruns_and_dagbundles",
    "testing_dag_bundle",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "db_test: the test needs Airflow's metadata database")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A ``db_test`` test is skipped: the stand-in has no metadata database."""
    for item in items:
        if item.get_closest_marker("db_test") is not None:
            item.add_marker(pytest.mark.skip(reason=needs("the metadata database (db_test)")))


class StructlogCapture:
    """What the upstream tests read from ``caplog``: the events' messages, and ``clear()``."""

    def __init__(self, entries: list[MutableMapping[str, Any]]) -> None:
        self.entries = entries

    @property
    def messages(self) -> list[str]:
        return [str(entry.get("event", "")) for entry in self.entries]

    @property
    def text(self) -> str:
        return "\n".join(self.messages)

    def clear(self) -> None:
        self.entries.clear()


@pytest.fixture(scope="session", autouse=True)
def _ensure_configured_logging() -> None:
    """Airflow's structlog configuration, as upstream's plugin sets it for the session."""
    from airflow.sdk._shared.logging import configure_logging

    configure_logging(log_level="INFO")


@pytest.fixture(name="caplog")
def override_caplog() -> Iterator[StructlogCapture]:
    """Upstream's ``caplog`` on Airflow 3 captures structlog events (``cap_structlog``)."""
    with structlog.testing.capture_logs() as entries:
        yield StructlogCapture(entries)


def _database_fixture(name: str) -> Callable[[], NoReturn]:
    def fixture() -> NoReturn:
        pytest.skip(needs(f"the {name} fixture (the metadata database)"))

    fixture.__name__ = name
    fixture.__doc__ = f"Upstream's ``{name}`` fixture needs the metadata database: the test is skipped."
    return pytest.fixture(name=name)(fixture)


for _name in DATABASE_FIXTURES:
    globals()[f"_fixture_{_name}"] = _database_fixture(_name)
