"""
Test helpers, public API: fake services with controllable job lifecycles, real Airflow in a test
process, and the contract kit that proves an operator resumable.

- :mod:`airflow_resumable.testing.contract`: :class:`~.contract.ResumableOperatorContract`.
- :mod:`airflow_resumable.testing.airflow_env`: a migrated Airflow home and ``run_dag``.
- :mod:`airflow_resumable.testing.toy`: the smallest resumable operator, on an in-memory service.

Nothing here is imported by the operators themselves.
"""

from __future__ import annotations
