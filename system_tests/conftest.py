"""System tests: real Airflow processes (scheduler, api-server, task supervisors) against fake clouds."""

from __future__ import annotations
