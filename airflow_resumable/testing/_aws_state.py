"""
The controller state behind :mod:`airflow_resumable.testing.aws`: lifecycles, idempotency tokens,
injected faults and the ledger, around moto's own request handling.

Private: import the public names from :mod:`airflow_resumable.testing.aws`. One
:class:`ControllerState` per process (moto's backends are process-wide), guarded by one lock that
also serialises every API call, so a test never sees a job half-way through a change.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing._aws_jobs import TrackedJob, kind_for
from airflow_resumable.testing._aws_realism import AwsRealism, json_body, page_of, strip_paging
from airflow_resumable.testing._aws_wire import (
    DEFAULT_ERROR_CODES,
    ErrorReply,
    LedgerEntry,
    Reply,
    error_reply,
)
from airflow_resumable.testing.realism import Realism

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_resumable.testing._aws_kind import JobKind
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["LIFECYCLES", "ControllerState", "Fault", "configure_moto", "restore_moto"]

LIFECYCLES = ("manual", "clock")
FINAL_RESULTS = ("succeeded", "failed")
_STOP_ON_FAILURE = frozenset(("CANCEL_AND_WAIT", "TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW"))
#: moto's own state-manager model of Batch jobs; frozen so that only the controller moves them.
BATCH_JOB_MODEL = "batch::job"


@dataclass
class Fault:
    """An injected failure of the next ``remaining`` calls (-1: all) of one operation."""

    operation: str
    status: int
    remaining: int
    after_handling: bool
    code: str
    message: str
    service: str | None = None

    def matches(self, call: ApiCall, *, after: bool) -> bool:
        return (
            self.remaining != 0
            and self.after_handling == after
            and self.operation == call.operation
            and self.service in (None, call.service)
        )


@dataclass
class _TokenRecord:
    fingerprint: str
    reply: Reply
    job_ids: tuple[str, ...]


def configure_moto() -> dict[str, Any]:
    """
    Switch moto to what the controller needs, through moto's own configuration API.

    Batch runs on ``batch_simple`` (no Docker), and the state manager never moves a Batch job by
    itself, so the controller alone drives its lifecycle. Returns what :func:`restore_moto` needs.
    """
    from moto.moto_api import state_manager
    from moto.moto_api._internal.models import moto_api_backend

    saved = {"config": dict(moto_api_backend.get_config()), "transition": None}
    if BATCH_JOB_MODEL in state_manager._transitions:
        saved["transition"] = state_manager.get_transition(BATCH_JOB_MODEL)
    moto_api_backend.set_config({"batch": {"use_docker": False}})
    state_manager.set_transition(BATCH_JOB_MODEL, {"progression": "manual", "times": sys.maxsize})
    return saved


def restore_moto(saved: dict[str, Any]) -> None:
    """Undo :func:`configure_moto` and forget every moto resource."""
    from moto.moto_api import state_manager
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    moto_api_backend.set_config(saved["config"])
    if saved["transition"] is None:
        state_manager.unset_transition(BATCH_JOB_MODEL)
    else:
        state_manager.set_transition(BATCH_JOB_MODEL, saved["transition"])


class ControllerState:
    """
    Everything the controller knows, and the request path around moto.

    :param lifecycle: ``"manual"`` (a job runs until :meth:`finish`) or ``"clock"`` (it ends
        ``final_result`` once it has been running ``run_duration`` seconds).
    :param reads_per_state: status reads a job spends in each state of its active path (0: a new
        job is running at once).
    :param realism: visibility lag, throttling, page sizes and history retention
        (:class:`~airflow_resumable.testing.realism.Realism`); ``Realism.documented()`` when None.
    """

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "succeeded",
        reads_per_state: int = 1,
        realism: Realism | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self._realism = AwsRealism(realism or Realism.documented())
        self.lifecycle, self.run_duration, self.final_result = "manual", run_duration, final_result
        self.reads_per_state = reads_per_state
        self.set_lifecycle(lifecycle, run_duration=run_duration, final_result=final_result)
        self._jobs: dict[str, TrackedJob] = {}
        self._tokens: dict[tuple[str, str, str, str], _TokenRecord] = {}
        self._faults: list[Fault] = []
        self._ledger: list[LedgerEntry] = []
        self._fake_errors: list[str] = []
        self._seq = itertools.count(1)
        self._job_seq = itertools.count(1)

    # ------------------------------------------------------------------ the request path
    def handle(self, call: ApiCall, forward: Callable[[], Reply]) -> Reply:
        """Answer one API call: faults, token replays, moto (or the controller), lifecycles, ledger."""
        with self.lock:
            self._advance_clock()
            kind = kind_for(call.service, call.operation)
            fault = self._take_fault(call, after=False)
            if fault is not None:
                self._record(call, fault.status, handled=False, fault="before")
                return error_reply(call, fault.status, fault.code, fault.message)
            if kind is not None and self._realism.throttled(kind, call):
                status, code = kind.throttle_error
                self._record(call, status, handled=False, fault="throttled")
                return error_reply(call, status, code, "Rate exceeded")
            self._expire_history()
            token = kind.token(call) if kind and call.operation == kind.submit_operation else None
            scope = (call.service, call.region, kind.token_scope(call) if kind else "", token or "")
            fingerprint = json.dumps(call.request(), sort_keys=True, default=str)
            stored = self._tokens.get(scope) if token else None
            replayed = False
            created: tuple[str, ...] = ()
            named: tuple[str, ...] = ()
            try:
                if stored is not None and kind is not None and kind.token_conflict is not None:
                    if stored.fingerprint != fingerprint:
                        status, code = kind.token_conflict
                        raise ErrorReply(status, code, f"clientToken {token} was used with another request")
                    reply, replayed, named = stored.reply, True, stored.job_ids
                else:
                    reply, created, named = self._dispatch(kind, call, forward)
                    if token and created and 200 <= reply.status < 300:
                        self._tokens[scope] = _TokenRecord(fingerprint, reply, created)
            except ErrorReply as err:
                reply = error_reply(call, err.status, err.code, err.message)
            fault = self._take_fault(call, after=True)
            status = reply.status if fault is None else fault.status
            self._record(
                call, status, True, created, named, token, replayed, None if fault is None else "after"
            )
            return reply if fault is None else error_reply(call, fault.status, fault.code, fault.message)

    def _dispatch(
        self, kind: JobKind | None, call: ApiCall, forward: Callable[..., Reply]
    ) -> tuple[Reply, tuple[str, ...], tuple[str, ...]]:
        listing = None if kind is None else kind.listings.get(call.operation)
        if kind is None or listing is None:
            return self._dispatch_one(kind, call, forward)
        # A list operation: moto (or the kind) answers everything, the controller pages it.
        rest, offset, asked = strip_paging(listing, call.body)
        reply, created, named = self._dispatch_one(
            kind, dataclasses.replace(call, body=rest), lambda: forward(json_body(rest))
        )
        if not 200 <= reply.status < 300:
            return reply, created, named
        size = self._realism.page_size(listing, asked)
        page = page_of(listing, reply.json(), offset, size, self._realism.hidden(kind, self._jobs))
        return Reply(reply.status, reply.headers, json.dumps(page, default=str).encode()), created, named

    def _dispatch_one(
        self, kind: JobKind | None, call: ApiCall, forward: Callable[..., Reply]
    ) -> tuple[Reply, tuple[str, ...], tuple[str, ...]]:
        if kind is None:
            return forward(), (), ()
        kind.precheck(call, self._jobs)
        cancelling = call.operation in kind.cancel_operations
        before = (
            {i: self._jobs[i].state for i in kind.cancel_ids(call) if i in self._jobs} if cancelling else {}
        )
        answer = kind.answer(call, self._jobs)
        if answer is not None:
            body = json.dumps(answer).encode()
            reply = Reply(200, [("Content-Type", "application/x-amz-json-1.1")], body)
        else:
            reply = forward()
        if not 200 <= reply.status < 300:
            return reply, (), ()
        if call.operation == kind.submit_operation:
            created = tuple(self._track(kind, call, reply))
            return reply, created, created
        if call.operation in kind.read_operations:
            parent, ids = kind.read_ids(call)
            named = ids if ids is not None else [j.job_id for j in self._children(kind, parent)]
            hidden = self._realism.hidden(kind, self._jobs)
            if hidden and call.operation not in kind.listings:
                shown = kind.conceal(call, reply.json(), hidden)
                reply = Reply(reply.status, reply.headers, json.dumps(shown, default=str).encode())
            for job_id in named:
                job = self._jobs.get(job_id)
                if job is not None and job.kind is kind and job_id not in hidden:
                    self._tick(job)  # a job the service does not show yet does not move either
            return reply, (), tuple(named)
        if cancelling:
            for job_id, state in before.items():
                job = self._jobs[job_id]
                if kind.cancel_applies(call, state):
                    self._end(job, kind.cancelled, kind.cancel_reason(call))
                elif state in kind.terminal and job.state != state:
                    kind.write_state(job, state, job.reason)  # moto changed a job AWS would leave alone
            return reply, (), tuple(kind.cancel_ids(call))
        return reply, (), ()

    def _track(self, kind: JobKind, call: ApiCall, reply: Reply) -> list[str]:
        ids = []
        for job_id, parent, action_on_failure in kind.created(call, reply.json()):
            account = kind.locate(job_id, call.region, parent)
            if account is None:
                continue
            job = TrackedJob(
                job_id=job_id,
                kind=kind,
                region=call.region,
                account=account,
                parent=parent,
                token=kind.token(call),
                seq=next(self._job_seq),
                action_on_failure=action_on_failure,
            )
            self._jobs[job_id] = job
            kind.write_state(job, kind.path[0], "")
            if self.reads_per_state == 0:
                self._tick(job)
            ids.append(job_id)
        return ids

    def _tick(self, job: TrackedJob) -> None:
        """One status read of ``job``: move it along its active path."""
        last = len(job.kind.path) - 1
        while not job.pinned and not job.finished and job.index < last and not self._blocked(job):
            job.reads += 1
            if job.reads < self.reads_per_state:
                return
            job.reads, job.index = 0, job.index + 1
            job.kind.write_state(job, job.kind.path[job.index], "")
            if job.index == last:
                job.started_at = time.monotonic()
            if self.reads_per_state > 0:
                return

    def _blocked(self, job: TrackedJob) -> bool:
        """A step waits while an older step of its cluster has not ended."""
        if not job.kind.sequential:
            return False
        return any(
            other.seq < job.seq and not other.finished and other.kind.model(other) is not None
            for other in self._children(job.kind, job.parent)
        )

    def _children(self, kind: JobKind, parent: str | None) -> list[TrackedJob]:
        return sorted(
            (j for j in self._jobs.values() if j.kind is kind and j.parent == parent), key=lambda j: j.seq
        )

    def _end(self, job: TrackedJob, state: str, reason: str) -> None:
        job.kind.write_state(job, state, reason)
        job.finished, job.reason, job.ended_at = True, reason, time.monotonic()
        if job.kind.sequential and state == job.kind.failed and job.action_on_failure in _STOP_ON_FAILURE:
            for other in self._children(job.kind, job.parent):
                if other.seq > job.seq and not other.finished and other.kind.model(other) is not None:
                    self._end(other, "CANCELLED", f"Cancelled after step {job.job_id} failed")
        if job.kind.sequential:
            for other in self._children(job.kind, job.parent):
                if not other.finished and other.index == 0 and self.reads_per_state == 0:
                    self._tick(other)

    def _expire_history(self) -> None:
        """Forget the finished jobs past the realism's retention, as the service's history does."""
        for job in list(self._jobs.values()):
            if self._realism.expired(job) and job.kind.model(job) is not None:
                job.kind.remove(job)
                self._tokens = {k: v for k, v in self._tokens.items() if job.job_id not in v.job_ids}

    def _advance_clock(self) -> None:
        if self.lifecycle != "clock":
            return
        now = time.monotonic()
        for job in list(self._jobs.values()):
            if job.finished or job.pinned or job.started_at is None or job.kind.model(job) is None:
                continue
            if now - job.started_at >= self.run_duration:
                kind = job.kind
                self._end(job, kind.succeeded if self.final_result == "succeeded" else kind.failed, "")

    def _take_fault(self, call: ApiCall, *, after: bool) -> Fault | None:
        for fault in self._faults:
            if fault.matches(call, after=after):
                if fault.remaining > 0:
                    fault.remaining -= 1
                return fault
        return None

    def _record(
        self,
        call: ApiCall,
        status: int,
        handled: bool,
        created: tuple[str, ...] = (),
        job_ids: tuple[str, ...] = (),
        token: str | None = None,
        replayed: bool = False,
        fault: str | None = None,
    ) -> None:
        entry = LedgerEntry(
            next(self._seq),
            call.service,
            call.operation,
            call.region,
            status,
            handled,
            created,
            job_ids,
            token,
            replayed,
            fault,
            call.request(),
            time.time(),
            kind.kind_name if (kind := kind_for(call.service, call.operation)) is not None else "",
        )
        self._ledger.append(entry)

    # ------------------------------------------------------------------ control
    def finish(self, job_id: str, *, succeeded: bool = True, reason: str = "") -> None:
        """End a job with its service's success or failure state (any earlier state is fine)."""
        with self.lock:
            job = self._live(job_id)
            job.pinned = False
            self._end(job, job.kind.succeeded if succeeded else job.kind.failed, reason)

    def set_state(self, job_id: str, state: str, reason: str = "") -> None:
        """Pin a job in any state of its service; reads and the clock no longer move it."""
        with self.lock:
            job = self._live(job_id)
            if state not in job.kind.states:
                raise ValueError(
                    f"{state!r} is not a {job.kind.service} state; one of {sorted(job.kind.states)}"
                )
            job.kind.write_state(job, state, reason)
            job.pinned, job.finished, job.reason = True, state in job.kind.terminal, reason
            job.ended_at = time.monotonic() if job.finished else None

    def expire(self, job_id: str) -> None:
        """Forget a job, as a service whose history expired would, and its idempotency token."""
        with self.lock:
            job = self._live(job_id)
            job.kind.remove(job)
            job.finished = True
            self._tokens = {k: v for k, v in self._tokens.items() if job_id not in v.job_ids}

    def job(self, job_id: str) -> dict[str, Any]:
        """The summary of one job (``state`` is ``EXPIRED`` once it is gone)."""
        with self.lock:
            self._advance_clock()
            if job_id not in self._jobs:
                raise KeyError(f"no job {job_id!r} was created through the controller")
            return self._jobs[job_id].summary()

    def jobs(self, service: str | None = None) -> list[dict[str, Any]]:
        """Summaries of every job, oldest first."""
        with self.lock:
            self._advance_clock()
            ordered = sorted(self._jobs.values(), key=lambda j: j.seq)
            return [j.summary() for j in ordered if service in (None, j.kind.service)]

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
        """Make the next ``count`` (-1: all) calls of ``operation`` answer HTTP ``status``."""
        if not (count > 0 or count == -1) or status < 400:
            raise ValueError("count must be positive or -1, and status an error status (>= 400)")
        code = code or DEFAULT_ERROR_CODES.get(status, "InternalServerException" if status >= 500 else "")
        if not code:
            raise ValueError(f"give an error code for status {status}")
        text = message or f"injected {status} {code} for {operation}"
        with self.lock:
            self._faults.append(Fault(operation, status, count, after_handling, code, text, service))

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self.lock:
            self._faults.clear()

    def set_lifecycle(
        self,
        lifecycle: str,
        *,
        run_duration: float | None = None,
        final_result: str | None = None,
        reads_per_state: int | None = None,
    ) -> None:
        """Switch between ``manual`` and ``clock``; unspecified settings stay as they are."""
        if lifecycle not in LIFECYCLES:
            raise ValueError(f"lifecycle must be one of {LIFECYCLES}, got {lifecycle!r}")
        if final_result is not None and final_result not in FINAL_RESULTS:
            raise ValueError(f"final_result must be one of {FINAL_RESULTS}, got {final_result!r}")
        if reads_per_state is not None and reads_per_state < 0:
            raise ValueError("reads_per_state must be >= 0")
        with self.lock:
            self.lifecycle = lifecycle
            self.run_duration = self.run_duration if run_duration is None else run_duration
            self.final_result = final_result or self.final_result
            self.reads_per_state = self.reads_per_state if reads_per_state is None else reads_per_state

    def fake_failed(self, call: ApiCall, error: Exception) -> Reply:
        """
        Record that the controller itself failed on ``call`` (a job kind's bug, not the client's)
        and answer 500 ``InternalFailure`` naming it, so the contract kit can tell a fake that
        answers wrong from an operator that reads it wrong.
        """
        import traceback

        where = traceback.extract_tb(error.__traceback__)[-1]
        text = (
            f"{type(error).__name__}: {error} (the fake answering {call.service} {call.operation}, "
            f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        )
        log.error("The fake failed: %s", text, exc_info=error)
        with self.lock:
            self._fake_errors.append(text)
        return error_reply(call, 500, "InternalFailure", f"the fake failed: {text}")

    def fake_errors(self) -> list[str]:
        """What the controller itself failed on, oldest first (see :meth:`fake_failed`)."""
        with self.lock:
            return list(self._fake_errors)

    def ledger(self) -> list[LedgerEntry]:
        """Every API call, oldest first."""
        with self.lock:
            return list(self._ledger)

    @property
    def realism(self) -> Realism:
        """The realism in force."""
        return self._realism.realism

    def set_realism(self, realism: Realism) -> None:
        """Switch visibility lag, throttling, page sizes and retention from now on (buckets refill)."""
        with self.lock:
            self._realism = AwsRealism(realism)

    def reset(self) -> None:
        """Forget every moto resource, job, token, fault and ledger entry."""
        from moto.moto_api._internal.models import moto_api_backend

        with self.lock:
            moto_api_backend.reset()
            self._jobs.clear()
            self._tokens.clear()
            self._faults.clear()
            self._ledger.clear()
            self._fake_errors.clear()

    def _live(self, job_id: str) -> TrackedJob:
        job = self._jobs.get(job_id)
        if job is None or job.kind.model(job) is None:
            raise KeyError(f"no live job {job_id!r} (never created through the controller, or expired)")
        return job
