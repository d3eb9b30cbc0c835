"""
Set-up of the installed-wheel contract run (``scripts/check_wheel.sh``): a throw-away Airflow home.

This directory is copied out of the checkout and run there, so ``airflow_resumable`` can only come
from the virtual environment the wheel was installed into; :func:`installed_package` fails the run
otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_resumable.testing.airflow_env import use_temporary_airflow_home

use_temporary_airflow_home()


def installed_package() -> Path:
    """
    The directory ``airflow_resumable`` was imported from, checked to lie in this interpreter's prefix.

    :raises RuntimeError: it was imported from anywhere else (the checkout, a stray ``PYTHONPATH``).
    """
    import airflow_resumable

    package = Path(airflow_resumable.__file__).resolve().parent
    if not package.is_relative_to(Path(sys.prefix).resolve()):
        raise RuntimeError(f"airflow_resumable imported from {package}, not from the wheel in {sys.prefix}")
    return package


def pytest_report_header() -> str:
    """Say, at the top of the run, which package and Airflow home it uses."""
    return f"airflow_resumable from {installed_package()}; AIRFLOW_HOME={os.environ['AIRFLOW_HOME']}"
