"""
A fake cloud in its own process: spawn ``python -m <module> --port=0 ...``, wait for its
``READY http://127.0.0.1:PORT`` line, stop it for sure. Shared by the fake Databricks and the moto
controller, whose jobs must outlive any Airflow process a test kills.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["ServiceProcess"]

log = logging.getLogger(__name__)
Self = TypeVar("Self", bound="ServiceProcess")


class ServiceProcess:
    """
    Base of the process modes of the fake clouds; a context manager.

    :param module: the module to run with ``python -m``; it must print ``READY <url>`` once serving.
    :param args: its command-line arguments (``--port=0`` is always added).
    :param startup_timeout: seconds to wait for ``READY``.
    :param log_path: file for the process's stderr; inherited from this process when None.
    """

    #: How the service is named in logs and errors.
    service_label = "fake service"

    def __init__(
        self,
        module: str,
        args: list[str],
        *,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.module = module
        self.args = args
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running process."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    def start(self: Self) -> Self:
        """Spawn the process and wait (bounded) for its ``READY`` line."""
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
                [sys.executable, "-m", self.module, "--port=0", *self.args],
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
        log.info("%s process %s serving at %s", self.service_label, self.process.pid, self._url)
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
            f"{self.service_label} process did not print READY within {self.startup_timeout}s "
            f"(exit code {process.poll()})"
        )

    def _on_stop(self, url: str) -> None:
        """Hook: forget per-url state (cached clients) when the process stops."""

    def stop(self, timeout: float = 5.0) -> None:
        """
        Terminate the process (SIGTERM), then kill it if it has not exited after ``timeout`` seconds.

        :param timeout: seconds to wait after SIGTERM.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if self._url is not None:
            self._on_stop(self._url)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
