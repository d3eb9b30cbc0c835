"""The installed Airflow's version, as upstream's ``tests_common.test_utils.version_compat`` gives it."""

from __future__ import annotations

from airflow import __version__
from packaging.version import Version

__all__ = ["AIRFLOW_V_3_0_PLUS", "AIRFLOW_V_3_1_PLUS", "AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS"]


def _base_version() -> tuple[int, int, int]:
    version = Version(__version__)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_0_PLUS = _base_version() >= (3, 0, 0)
AIRFLOW_V_3_1_PLUS = _base_version() >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS = _base_version() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS = _base_version() >= (3, 3, 0)
