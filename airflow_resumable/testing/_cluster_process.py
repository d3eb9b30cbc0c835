"""
Process plumbing for :mod:`airflow_resumable.testing.cluster`: free ports, bounded waits, and one
long-running Airflow command whose output goes to a log file and whose whole process tree can be
stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from typing import IO, TYPE_CHECKING, TypeVar, cast

import psutil
import tenacity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = ["ClusterProcessDied", "ManagedProcess", "free_port", "stop_process_trees", "wait_until"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClusterProcessDied(RuntimeError):
    """An Airflow process of the cluster exited while the cluster was expected to be up."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    step: float = 0.2,
    check: Callable[[], None] | None = None,
) -> T:
    """
    Call ``probe`` every ``step`` seconds until it returns a truthy value, and return that value.

    :param probe: returns the awaited value, or something falsy (None, False, []) while waiting.
    :param timeout: seconds before giving up.
    :param what: description of the awaited event, for the error message.
    :param check: called before every probe; raises to abort the wait (e.g. a process died).
    :raises TimeoutError: ``probe`` did not succeed within ``timeout``.
    """

    def checked_probe() -> T | None:
        if check is not None:
            check()
        return probe()

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda result: not result),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(step),
    )
    try:
        result = retrying(checked_probe)
    except tenacity.RetryError:
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}") from None
    return cast("T", result)  # only a truthy result ends the retrying


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_process_trees(pids: Iterable[int], grace: float = 10.0) -> None:
    """
    SIGTERM the processes ``pids``, then SIGKILL whatever is left of their trees after ``grace`` s.

    Only the roots get SIGTERM: each Airflow command shuts its own children down (the scheduler
    its LocalExecutor workers). The trees are collected before signalling and again before
    killing, so children re-parented when their parent exits (and task processes, which run in
    their own process groups) are still reached.
    """
    roots = [root for pid in pids if (tree := _tree(pid)) for root in tree[:1]]
    procs: dict[int, psutil.Process] = {p.pid: p for root in roots for p in _tree(root.pid)}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            root.send_signal(signal.SIGTERM)
    _, alive_roots = psutil.wait_procs(roots, timeout=grace)
    for root in alive_roots:
        log.warning("airflow process %s did not stop within %.0fs; killing its tree", root.pid, grace)
        procs.update({p.pid: p for p in _tree(root.pid)})
    leftovers = [p for p in procs.values() if p.is_running()]
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=5)


class ManagedProcess:
    """
    One Airflow command running in the background, stdout and stderr appended to ``log_path``.

    :param name: short name used in messages (``scheduler``, ``api-server``...).
    :param argv: the command.
    :param env: its full environment.
    :param log_path: file receiving its stdout and stderr.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env)
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the command (raises if not started)."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._popen.pid

    def start(self) -> None:
        """Launch the command in its own session (so a Ctrl-C of the test run does not reach it)."""
        self._log_file = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.fspath(self.log_path.parent),
        )
        log.info("started %s (pid %s): %s", self.name, self._popen.pid, " ".join(self.argv))

    @property
    def started(self) -> bool:
        """Whether :meth:`start` launched the command."""
        return self._popen is not None

    def wait(self, timeout: float) -> int:
        """
        Wait for the command to exit and return its exit code.

        :raises TimeoutError: it still runs after ``timeout`` seconds.
        """
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not started")
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"airflow {self.name} still runs after {timeout:.0f}s") from None

    def check_alive(self) -> None:
        """
        Raise :class:`ClusterProcessDied` with the tail of the log when the command has exited.
        """
        if self._popen is not None and (code := self._popen.poll()) is not None:
            raise ClusterProcessDied(
                f"airflow {self.name} exited with code {code}; last lines of {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )

    def stop(self, grace: float = 10.0) -> None:
        """Stop the command and every descendant; SIGKILL after ``grace`` seconds."""
        if self._popen is not None:
            stop_process_trees([self._popen.pid], grace=grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
