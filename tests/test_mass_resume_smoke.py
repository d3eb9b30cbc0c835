"""
Smoke test of ``benchmarks/mass_resume.py``: 4 tries per operator, a throttle that refuses most calls.

The benchmark runs in its own process (it points the connections at its fakes through the
environment). It exits non-zero on a duplicate, a failed try, or a throttle that refused nothing.
About 10 s per service: 4 tasks polling every 3 s stay under 2 calls/s once resumed, so only the
resume itself is throttled (a burst of 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_resumable.testing.aws import MotoControlClient

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mass_resume.py"


@pytest.mark.parametrize(
    "service",
    [
        "databricks",
        pytest.param(
            "batch",
            marks=pytest.mark.skipif(
                not hasattr(MotoControlClient, "set_realism"), reason="the moto controller has no realism yet"
            ),
        ),
    ],
)
def test_a_throttled_mass_resume_makes_no_duplicate_and_fails_no_try(service: str) -> None:
    args = ["--services", service, "--tasks", "4", "--poll-interval", "3", "--rate", "2", "--burst", "2"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| Resumable"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    tasks, checkpointed, throttled, _calls, created, duplicates, retries = cells[1:8]
    assert (tasks, checkpointed, created, duplicates, retries) == ("4", "4", "4", "0", "0")
    assert int(throttled) > 0
