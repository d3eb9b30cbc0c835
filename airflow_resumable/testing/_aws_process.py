"""
The process mode of :mod:`airflow_resumable.testing.aws`: the controller in its own process.

Private: import :class:`MotoProcess` from :mod:`airflow_resumable.testing.aws`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from airflow_resumable.testing._aws_control import MotoControlClient
from airflow_resumable.testing._aws_resources import forget_clients
from airflow_resumable.testing._service_process import ServiceProcess

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from airflow_resumable.testing.realism import Realism

__all__ = ["MotoProcess"]


class MotoProcess(ServiceProcess):
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
    :param realism: the controller's realism (``Realism.documented()`` when None).
    :param kind_modules: modules the process imports before it serves, each registering its job
        kinds with ``register_job_kind`` (a maintainer's kinds; the package's own are always
        served). New in 0.5.0.

    .. versionadded:: 0.1.0
    """

    service_label = "moto controller"

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "succeeded",
        reads_per_state: int = 1,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
        realism: Realism | None = None,
        kind_modules: Sequence[str] = (),
    ) -> None:
        args = [f"--lifecycle={lifecycle}", f"--run-duration={run_duration}"]
        args += [f"--final-result={final_result}", f"--reads-per-state={reads_per_state}"]
        if realism is not None:
            args.append(f"--realism={json.dumps(realism.to_dict())}")
        args += [f"--kind-module={module}" for module in kind_modules]
        super().__init__(
            "airflow_resumable.testing.aws", args, startup_timeout=startup_timeout, log_path=log_path
        )

    @property
    def client(self) -> MotoControlClient:
        """A :class:`MotoControlClient` for the process."""
        return MotoControlClient(self.url)

    def _on_stop(self, url: str) -> None:
        forget_clients(url)
