"""
moto with controllable job lifecycles, for AWS Batch, EMR steps, EMR Serverless and EMR on EKS.

Out of the box moto does not keep these jobs running the way AWS does: Batch without Docker
succeeds at submission, EMR Serverless job runs end ``SUCCESS`` at once, EMR steps never
progress (and ``CancelSteps`` is missing), EMR on EKS runs stay ``RUNNING`` for ever, and neither
EMR API honours ``clientToken``. The controller fixes that around moto, without patching it.

Contract:

- **Transport**: moto's own server app (the one ``moto_server`` serves) behind a WSGI middleware
  on ``127.0.0.1``. The real boto3 clients and Airflow hooks talk to it over HTTP, so retries,
  error parsing and connection handling are botocore's own. Run it in this process with
  :class:`MotoServer` (one at a time: moto's backends are process-wide) or as its own process
  with :class:`MotoProcess` / ``python -m airflow_resumable.testing.aws --port 0``, which prints
  ``READY http://127.0.0.1:PORT``; :class:`MotoControlClient` drives either over HTTP
  (``/_airflow_resumable/...``). All implement :class:`MotoControl`.
- **Lifecycle**: a job a submit call creates (``SubmitJob``, ``AddJobFlowSteps``, EMR Serverless
  and EMR on EKS ``StartJobRun``) starts in its service's first state and moves one state along
  its active path per ``reads_per_state`` status reads (``DescribeJobs``, ``DescribeStep``/
  ``ListSteps``, ``GetJobRun``, ``DescribeJobRun``) until it is running: Batch
  SUBMITTED→PENDING→RUNNABLE→STARTING→RUNNING, EMR Serverless SUBMITTED→PENDING→SCHEDULED→RUNNING,
  EMR on EKS PENDING→SUBMITTED→RUNNING, EMR steps PENDING→RUNNING, one step per cluster at a time.
  With ``lifecycle="manual"`` it then runs until :meth:`MotoControl.finish`; with ``"clock"`` it
  ends ``final_result`` ``run_duration`` seconds after it started running. ``set_state`` pins a
  job in any state of its service. A failed step whose ``ActionOnFailure`` is not ``CONTINUE``
  cancels the later pending steps (the cluster itself is left running).
- **Cancel**: ``TerminateJob`` (any active state) and ``CancelJob`` (before STARTING) end a Batch
  job ``FAILED`` with the request's reason; ``CancelJobRun`` ends a run ``CANCELLED``;
  ``CancelSteps`` (answered by the controller) cancels pending and running steps.
- **Idempotency**: ``clientToken`` of both ``StartJobRun`` calls, per application or virtual
  cluster: the same token with the same request answers the first call's response again and
  creates nothing; with another request it answers 409 ``ConflictException`` (EMR Serverless) or
  400 ``ValidationException`` (EMR on EKS). Only successful calls are remembered.
- **Faults**: :meth:`MotoControl.inject_fault` fails the next N calls of an operation with any
  status and error code, before handling (nothing happens) or after it (the call takes effect
  and the response is lost); :meth:`~MotoControl.throttle` and :meth:`~MotoControl.lose_response`
  are the common cases. Error bodies have the service protocol's shape, so botocore raises the
  ``ClientError`` (and applies the retry policy) it would against AWS.
- **Ledger**: every signed API call is a :class:`LedgerEntry`: operation, status, whether it took
  effect, the ids it created or named, its token, its request. Control calls are not recorded.

Batch runs on moto's ``batch_simple`` backend (``use_docker: False`` through moto's config API),
and moto's state manager is told never to move a Batch job (``set_transition("batch::job",
manual)``), which leaves the lifecycle to the controller.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_resumable.testing._aws_app import main, serve
from airflow_resumable.testing._aws_control import MotoControl, MotoControlClient, MotoControlError
from airflow_resumable.testing._aws_jobs import JobKind, TrackedJob, register_job_kind
from airflow_resumable.testing._aws_jobs_ecs import EcsResources, provision_ecs
from airflow_resumable.testing._aws_jobs_glue import provision_glue
from airflow_resumable.testing._aws_jobs_sagemaker import SageMakerResources, provision_sagemaker
from airflow_resumable.testing._aws_jobs_sfn import provision_state_machine
from airflow_resumable.testing._aws_process import MotoProcess
from airflow_resumable.testing._aws_realism import Listing
from airflow_resumable.testing._aws_resources import (
    TEST_ACCOUNT_ID,
    TEST_ROLE_ARN,
    BatchResources,
    MotoJobDriver,
    aws_client,
    aws_connection_env,
    forget_clients,
    provision_batch,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
)
from airflow_resumable.testing._aws_state import ControllerState, configure_moto, restore_moto
from airflow_resumable.testing._aws_wire import ApiCall, ErrorReply, LedgerEntry

if TYPE_CHECKING:
    from types import TracebackType

    from werkzeug.serving import BaseWSGIServer

    from airflow_resumable.testing.realism import Realism

__all__ = [
    "TEST_ACCOUNT_ID",
    "TEST_ROLE_ARN",
    "ApiCall",
    "BatchResources",
    "EcsResources",
    "ErrorReply",
    "JobKind",
    "LedgerEntry",
    "Listing",
    "MotoControl",
    "MotoControlClient",
    "MotoControlError",
    "MotoJobDriver",
    "MotoProcess",
    "MotoServer",
    "SageMakerResources",
    "TrackedJob",
    "aws_client",
    "aws_connection_env",
    "provision_batch",
    "provision_ecs",
    "provision_emr_cluster",
    "provision_emr_serverless_application",
    "provision_emr_virtual_cluster",
    "provision_glue",
    "provision_sagemaker",
    "provision_state_machine",
    "register_job_kind",
]

log = logging.getLogger(__name__)


class MotoServer(MotoControl):
    """
    The controller served from a thread of this process; a context manager.

    Only one may run at a time (moto's backends are global to the process); ``stop`` resets them.

    :param lifecycle: ``"manual"`` or ``"clock"``.
    :param run_duration: seconds a running job takes in clock mode.
    :param final_result: ``"succeeded"`` or ``"failed"``: how the clock ends jobs.
    :param reads_per_state: status reads per state on the active path (0: running at once).
    :param port: port on 127.0.0.1; 0 picks a free one.
    :param realism: visibility lag, throttling, page sizes and retention (``Realism.documented()``
        when None; ``set_realism`` changes it at run time).

    .. versionadded:: 0.1.0
    """

    _running: ClassVar[MotoServer | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "succeeded",
        reads_per_state: int = 1,
        port: int = 0,
        realism: Realism | None = None,
    ) -> None:
        self.state = ControllerState(
            lifecycle,
            run_duration=run_duration,
            final_result=final_result,
            reads_per_state=reads_per_state,
            realism=realism,
        )
        self._requested_port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._saved: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("MotoServer is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def client(self) -> MotoControlClient:
        """A :class:`MotoControlClient` for this server (drives it over HTTP, like process mode)."""
        return MotoControlClient(self.url)

    def start(self) -> MotoServer:
        """Start serving; returns once the server answers HTTP requests."""
        with MotoServer._lock:
            if self._server is not None:
                return self
            if MotoServer._running is not None:
                raise RuntimeError("another MotoServer runs in this process; moto's state is process-wide")
            self._saved = configure_moto()
            self._server = serve(self.state, self._requested_port)
            MotoServer._running = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.client.wait_until_ready(timeout=10.0)
        log.info("moto controller serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, release the port and reset moto's backends."""
        with MotoServer._lock:
            server, self._server = self._server, None
            if server is None:
                return
            forget_clients(f"http://127.0.0.1:{server.server_port}")
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._thread = None
            if self._saved is not None:
                restore_moto(self._saved)
            MotoServer._running = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def finish(self, job_id: str, *, succeeded: bool = True, reason: str = "") -> None:
        self.state.finish(job_id, succeeded=succeeded, reason=reason)

    def set_state(self, job_id: str, state: str, reason: str = "") -> None:
        self.state.set_state(job_id, state, reason)

    def expire(self, job_id: str) -> None:
        self.state.expire(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.state.job(job_id)

    def jobs(self, service: str | None = None) -> list[dict[str, Any]]:
        return self.state.jobs(service)

    def inject_fault(
        self,
        operation: str,
        status: int = 500,
        count: int = 1,
        *,
        after_handling: bool = False,
        code: str | None = None,
        message: str | None = None,
        service: str | None = None,
    ) -> None:
        self.state.inject_fault(
            operation,
            status,
            count,
            after_handling=after_handling,
            code=code,
            message=message,
            service=service,
        )

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def set_lifecycle(
        self,
        lifecycle: str,
        *,
        run_duration: float | None = None,
        final_result: str | None = None,
        reads_per_state: int | None = None,
    ) -> None:
        self.state.set_lifecycle(
            lifecycle, run_duration=run_duration, final_result=final_result, reads_per_state=reads_per_state
        )

    def ledger(self) -> list[LedgerEntry]:
        return self.state.ledger()

    def fake_errors(self) -> list[str]:
        return self.state.fake_errors()

    def set_realism(self, realism: Realism) -> None:
        self.state.set_realism(realism)

    @property
    def realism(self) -> Realism:
        return self.state.realism

    def reset(self) -> None:
        self.state.reset()


if __name__ == "__main__":
    sys.exit(main())
