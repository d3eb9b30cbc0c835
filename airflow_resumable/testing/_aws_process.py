"""
The process mode of :mod:`airflow_resumable.testing.aws`: the controller in its own process.

Private: import :class:`MotoProcess` from :mod:`airflow_resumable.testing.aws`.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_resumable.testing._aws_control import MotoControlClient
from airflow_resumable.testing._aws_resources import forget_clients

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["MotoProcess"]

log = logging.getLogger(__name__)


class MotoProcess:
    """
    The controller in its own process (``python -m airflow_resumable.testing.aws``); a context manager.

    Its jobs outlive any Airflow process a test kills. ``__enter__`` waits (bounded) for the
    ``READY`` line; ``__exit__`` terminates the process, then kills it if it lingers.

    :param lifecycle: ``"manual"`` or ``"clock"``.
    :param run_duration: seconds a running job takes in clock mode.
    :param final_result: ``"succeeded"`` or ``"failed"``.
    :param reads_per_state: status reads per state on the active path.
    :param startup_timeout: seconds to wait for ``READY``.
    :param log_path: file for the process's log (stderr); inherited from this process when None.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "succeeded",
        reads_per_state: int = 1,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = [f"--lifecycle={lifecycle}", f"--run-duration={run_duration}"]
        self.args += [f"--final-result={final_result}", f"--reads-per-state={reads_per_state}"]
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running process."""
        if self._url is None:
            raise RuntimeError("MotoProcess is not started")
        return self._url

    @property
    def client(self) -> MotoControlClient:
        """A :class:`MotoControlClient` for the process."""
        return MotoControlClient(self.url)

    def start(self) -> MotoProcess:
        """Spawn the process and wait for its ``READY`` line."""
        if self.process is not None:
            return self
        package_root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.getenv("PYTHONPATH")])),
        }
        stderr = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed below
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "airflow_resumable.testing.aws", "--port=0", *self.args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            if stderr is not None:
                stderr.close()
        try:
            self._url = self._read_ready_line(self.process)
        except BaseException:
            self.stop()
            raise
        log.info("moto controller process %s serving at %s", self.process.pid, self._url)
        return self

    def _read_ready_line(self, process: subprocess.Popen[bytes]) -> str:
        assert process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.05):
                    line = process.stdout.readline().decode().strip()
                    if line.startswith("READY "):
                        return line.split(" ", 1)[1]
                    if not line and process.poll() is not None:
                        break
                elif process.poll() is not None:
                    break
        raise RuntimeError(
            f"moto controller process did not print READY within {self.startup_timeout}s "
            f"(exit code {process.poll()})"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (SIGTERM), then kill it if it has not exited after ``timeout`` s."""
        process, self.process = self.process, None
        if process is None:
            return
        if self._url is not None:
            forget_clients(self._url)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
