"""
The "Resumable jobs" page: every remote job record of the deployment, in the Airflow UI.

Registered by the provider's plugin (:class:`airflow_resumable.plugin.ResumablePlugin`): the API
server serves :func:`~airflow_resumable.ui.app.create_app` under :data:`URL_PREFIX`, and the UI
shows it under Browse > Resumable jobs and as a "Resumable job" tab of each task instance. See
``docs/ui.md``.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from airflow_resumable.ui.app import PAGE_SIZE, URL_PREFIX, create_app

__all__ = ["PAGE_SIZE", "URL_PREFIX", "create_app"]
