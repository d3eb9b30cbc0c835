"""
pytest plugin of the package (entry point ``pytest11``): the contract kit's assertions show values.

pytest rewrites ``assert`` statements only in test modules, conftest files and modules registered
before they are imported. The kit's scenarios live in this package, so without this a failed
scenario would end in a bare ``AssertionError``; with it, in pytest's usual ``assert 2 == 1``
explanation. Installed with the package; nothing else is configured.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(
    "airflow_resumable.testing.contract", "airflow_resumable.testing._contract_interruptions"
)
