"""Provider metadata read by Airflow's ProvidersManager (the ``apache_airflow_provider`` entry point)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Describe this package to Airflow; must not import Airflow (it runs during Airflow's start-up)."""
    from airflow_resumable import __version__
    from airflow_resumable._config import provider_config

    return {
        "package-name": "airflow-resumable",
        "name": "Resumable remote jobs",
        "description": "Remote jobs that survive the worker that waits for them: exactly-once "
        "submission, reconnection, and worker shutdown as a checkpoint.",
        "versions": [__version__],
        "config": provider_config(),
    }
