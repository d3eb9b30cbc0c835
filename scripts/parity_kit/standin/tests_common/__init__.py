"""
A stand-in for the parts of Airflow's unpublished ``tests_common`` package that the providers' unit
tests under ``make parity`` import (apache/airflow ``devel-common/src/tests_common``).

Only what those modules import is here. What needs Airflow's test database (a DAG synced to the
metadata database, task instances, sessions) is not imitated: it skips the test with a reason that
starts ``needs tests_common:``, and ``make parity`` leaves such tests out of every count.
"""

from __future__ import annotations

#: The prefix of every skip reason the stand-in gives; ``make parity`` counts tests by it.
NEEDS = "needs tests_common:"


def needs(what: str) -> str:
    """The skip reason for a test that needs ``what`` from the real ``tests_common``."""
    return f"{NEEDS} {what}"
