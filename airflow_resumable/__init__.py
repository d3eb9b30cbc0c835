"""
airflow_resumable: remote jobs that survive the Airflow worker that waits for them.

Public names load lazily: Airflow imports ``airflow_resumable.get_provider_info`` while it is still
configuring itself, so this module must not import Airflow at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.5.0"

_LAZY = {
    "CorruptRecordError": "airflow_resumable.exceptions",
    "InvalidJobSpecError": "airflow_resumable.exceptions",
    "JobFailedError": "airflow_resumable.exceptions",
    "JobNotFoundError": "airflow_resumable.exceptions",
    "RecipeRefusedError": "airflow_resumable.exceptions",
    "ResumableError": "airflow_resumable.exceptions",
    "StateStoreUnavailableError": "airflow_resumable.exceptions",
    "TransientCloudError": "airflow_resumable.exceptions",
    "ResumableJobMixin": "airflow_resumable.mixin",
    "RECORD_KEY": "airflow_resumable.record",
    "JobRecord": "airflow_resumable.record",
    "fingerprint_of": "airflow_resumable.record",
    "RetryPolicy": "airflow_resumable.retry",
}

__all__ = [
    "RECORD_KEY",
    "CorruptRecordError",
    "InvalidJobSpecError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRecord",
    "RecipeRefusedError",
    "ResumableError",
    "ResumableJobMixin",
    "RetryPolicy",
    "StateStoreUnavailableError",
    "TransientCloudError",
    "__version__",
    "fingerprint_of",
]

if TYPE_CHECKING:
    from airflow_resumable.exceptions import (
        CorruptRecordError,
        InvalidJobSpecError,
        JobFailedError,
        JobNotFoundError,
        RecipeRefusedError,
        ResumableError,
        StateStoreUnavailableError,
        TransientCloudError,
    )
    from airflow_resumable.mixin import ResumableJobMixin
    from airflow_resumable.record import RECORD_KEY, JobRecord, fingerprint_of
    from airflow_resumable.retry import RetryPolicy


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_resumable' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
