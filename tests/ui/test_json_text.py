"""``json_text`` on each database the page runs on: the record's fields read in SQL, not in Python."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from sqlalchemy import Column, Integer, MetaData, Table, Text, literal, select

from airflow_resumable.testing.services import fresh_postgres_database, require
from airflow_resumable.ui._query import json_text

if TYPE_CHECKING:
    from collections.abc import Iterator

RECORDS = {
    1: {
        "phase": "interrupted",
        "interruption": {"kind": "unknown", "signal": "SIGTERM"},
        "cancel_failed": None,
    },
    2: {"phase": "completed", "interruption": None, "cancel_failed": {"error": "E"}},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sqlalchemy.Engine]:
    """An engine on sqlite, and on a fresh PostgreSQL database (skipped without one, failed under CI)."""
    if request.param == "sqlite":
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path_factory.mktemp('json') / 'db.sqlite'}")
        yield engine
        engine.dispose()
        return
    with fresh_postgres_database(require("postgres").postgres, prefix="airflow_json") as url:
        engine = sqlalchemy.create_engine(url)
        yield engine
        engine.dispose()


def test_json_text_reads_nested_fields_and_nulls(engine: sqlalchemy.Engine) -> None:
    """Nested text, a JSON null and an absent key read the same on every database."""
    table = Table("records", MetaData(), Column("id", Integer, primary_key=True), Column("value", Text))
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": i, "value": json.dumps(v)} for i, v in RECORDS.items()])
        rows = connection.execute(
            select(
                table.c.id,
                json_text(table.c.value, literal("phase")),
                json_text(table.c.value, literal("interruption"), literal("kind")),
                json_text(table.c.value, literal("cancel_failed"), literal("error")),
                json_text(table.c.value, literal("missing")),
            ).order_by(table.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        (1, "interrupted", "unknown", None, None),
        (2, "completed", None, "E", None),
    ]
