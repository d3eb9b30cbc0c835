"""
An in-memory job service and two operators on top of it: the smallest complete resumable operator.

``ToyJobService`` keeps jobs in memory with a *manual* lifecycle: a job stays ``RUNNING`` until
the test calls :meth:`ToyJobService.finish`. It records every submit and cancel, so a test can
count duplicates. Operators find their service by name in a process-wide registry, which works
because ``dag.test()`` runs tasks in the test's own process.

- :class:`ToyJobOperator` talks to a service that deduplicates on the submission token (like
  Databricks' ``idempotency_token`` or EMR's ``clientToken``).
- :class:`ToyTaggedJobOperator` talks to one that does not (like AWS Batch): it tags the job with
  the token and implements ``find_job``.

The service is as unkind as a :class:`~airflow_resumable.testing.realism.Realism` asks
(:meth:`ToyJobService.set_realism`; off by default): a new job is missing from status and list
calls for ``visibility_lag`` seconds, status and list calls beyond ``throttle_rate`` (after a
burst of ``throttle_burst``) raise :class:`ThrottledError`, :meth:`ToyJobService.list_jobs`
answers ``page_size`` jobs a page (newest first), and a finished job is forgotten ``retention``
seconds after it ended. The contract kit proves itself on it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_resumable.exceptions import JobNotFoundError, ThrottledError, TransientCloudError
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.record import fingerprint_of
from airflow_resumable.testing.realism import Realism, TokenBucket

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "ToyDriver",
    "ToyJob",
    "ToyJobOperator",
    "ToyJobService",
    "ToyRequestError",
    "ToyTaggedJobOperator",
    "cancel_toy_job_by_recipe",
    "toy_service",
]

ACTIVE = frozenset({"PENDING", "RUNNING"})
#: What a refused call (:meth:`ToyJobService.refuse_next`) says: not that the job is unknown.
REFUSAL = "the request is invalid"


class ToyRequestError(Exception):
    """
    A call the toy service refused for a cause other than an unknown job (a client error: no
    retry helps); the contract kit's not-found lookalike for the toy.

    .. versionadded:: 0.5.0
    """


#: Jobs a page of :meth:`ToyJobService.list_jobs` when the realism names no page size.
DEFAULT_PAGE_SIZE = 100


@dataclass
class ToyJob:
    """One remote job: its id, the command it runs, the token or tag it was submitted with."""

    job_id: str
    command: str
    token: str | None
    state: str = "RUNNING"
    #: ``time.monotonic()`` at creation and at the end (None while active): lag and retention.
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None


@dataclass
class ToyJobService:
    """
    A remote job service kept in memory, thread-safe.

    :param name: registry name; operators refer to the service by it.
    :param deduplicates: return the existing job for a repeated token (idempotent submission).
    """

    name: str
    deduplicates: bool = True
    jobs: dict[str, ToyJob] = field(default_factory=dict)
    submissions: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    failing_calls: dict[str, int] = field(default_factory=dict)
    throttled_calls: dict[str, int] = field(default_factory=dict)
    lost_responses: dict[str, int] = field(default_factory=dict)
    refused_calls: dict[str, int] = field(default_factory=dict)
    complete_after_polls: int | None = None
    polls: dict[str, int] = field(default_factory=dict)
    realism: Realism = field(default_factory=Realism)
    #: Status and list calls refused for the rate (:class:`ThrottledError`), and status calls that
    #: did not find a job because it was too young: what the realism did.
    throttled: int = 0
    hidden: int = 0
    _bucket: TokenBucket | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_realism(self, realism: Realism) -> None:
        """Be as unkind as ``realism`` from now on (a fresh throttling bucket)."""
        with self._lock:
            self.realism = realism
            rate = realism.throttle_rate
            self._bucket = None if rate is None else TokenBucket(rate, realism.throttle_burst)

    def submit(self, command: str, token: str | None) -> str:
        """Create a job (or return the one this token created, when deduplicating)."""
        with self._lock:
            self._maybe_fail("submit")
            if self.deduplicates and token is not None:
                for job in self.jobs.values():
                    if job.token == token:
                        return job.job_id
            job = ToyJob(job_id=f"{self.name}-job-{next(self._ids)}", command=command, token=token)
            self.jobs[job.job_id] = job
            self.submissions.append(job.job_id)
            self._maybe_lose_response("submit")
            return job.job_id

    def status(self, job_id: str) -> str:
        """The job's state; :class:`JobNotFoundError` for an unknown or expired job."""
        with self._lock:
            self._maybe_fail("status")
            self._take_token("status")
            job = self.jobs.get(job_id)
            if job is not None and not self._visible(job):
                if time.monotonic() - job.created < self.realism.visibility_lag:
                    self.hidden += 1
                job = None
            if job is None:
                raise JobNotFoundError(f"toy job {job_id!r} does not exist")
            self.polls[job_id] = self.polls.get(job_id, 0) + 1
            limit = self.complete_after_polls
            if limit is not None and job.state in ACTIVE and self.polls[job_id] >= limit:
                job.state = "SUCCEEDED"
                job.ended = time.monotonic()
            return job.state

    def list_jobs(self, page_token: str | None = None) -> tuple[list[ToyJob], str | None]:
        """
        One page of the visible jobs, newest first, and the token of the next page (None: last).

        A job younger than the visibility lag or past its retention is not listed.
        """
        with self._lock:
            self._maybe_fail("list")
            self._take_token("list")
            visible = [job for job in reversed(self.jobs.values()) if self._visible(job)]
            size = self.realism.page_size or DEFAULT_PAGE_SIZE
            start = int(page_token or 0)
            end = start + size
            return visible[start:end], (str(end) if end < len(visible) else None)

    def find_by_tag(self, token: str) -> str | None:
        """
        The id of the job tagged with ``token``, if listed: every page of :meth:`list_jobs`, as a
        client library's paginator walks them (bounded by the number of jobs).
        """
        page_token: str | None = None
        for _ in range(len(self.jobs) + 1):
            page, page_token = self.list_jobs(page_token)
            found = next((job.job_id for job in page if job.token == token), None)
            if found is not None or page_token is None:
                return found
        return None

    def cancel(self, job_id: str) -> None:
        """Cancel a job; a terminal job stays as it is."""
        with self._lock:
            self._maybe_fail("cancel")
            self.cancels.append(job_id)
            job = self.jobs[job_id]
            if job.state in ACTIVE:
                job.state = "CANCELLED"
                job.ended = time.monotonic()

    def finish(self, job_id: str, *, succeeded: bool = True) -> None:
        """End a job with ``SUCCEEDED`` or ``FAILED``."""
        with self._lock:
            job = self.jobs[job_id]
            job.state = "SUCCEEDED" if succeeded else "FAILED"
            job.ended = time.monotonic()

    def expire(self, job_id: str) -> None:
        """Forget a job, as a service whose history expired would."""
        with self._lock:
            del self.jobs[job_id]

    def fail_next(self, call: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``call`` (submit, status, cancel) raise a transient error."""
        with self._lock:
            self.failing_calls[call] = times

    def throttle_next(self, call: str, times: int = 1) -> None:
        """Refuse the next ``times`` calls of ``call`` with :class:`ThrottledError` (nothing is done)."""
        with self._lock:
            self.throttled_calls[call] = times

    def lose_next_response(self, call: str, times: int = 1) -> None:
        """Carry out the next ``times`` calls of ``call`` but answer with a transient error."""
        with self._lock:
            self.lost_responses[call] = times

    def refuse_next(self, call: str, times: int = 1) -> None:
        """
        Refuse the next ``times`` calls of ``call`` with :class:`ToyRequestError` (nothing is done).

        .. versionadded:: 0.5.0
        """
        with self._lock:
            self.refused_calls[call] = times

    def _visible(self, job: ToyJob) -> bool:
        """Old enough to be seen, and not past its retention."""
        now = time.monotonic()
        if now - job.created < self.realism.visibility_lag:
            return False
        retention = self.realism.retention
        return retention is None or job.ended is None or now - job.ended < retention

    def _take_token(self, call: str) -> None:
        if self._bucket is not None and self._bucket.take() > 0:
            self.throttled += 1
            raise ThrottledError(f"toy service: {call} throttled (rate {self.realism.throttle_rate}/s)")

    def _maybe_lose_response(self, call: str) -> None:
        if self.lost_responses.get(call, 0) > 0:
            self.lost_responses[call] -= 1
            raise TransientCloudError(f"toy service: {call} was carried out but the response was lost")

    def _maybe_fail(self, call: str) -> None:
        if self.refused_calls.get(call, 0) > 0:
            self.refused_calls[call] -= 1
            raise ToyRequestError(f"toy service: {call} refused: {REFUSAL}")
        if self.throttled_calls.get(call, 0) > 0:
            self.throttled_calls[call] -= 1
            raise ThrottledError(f"toy service: {call} throttled")
        if self.failing_calls.get(call, 0) > 0:
            self.failing_calls[call] -= 1
            raise TransientCloudError(f"toy service: injected transient failure of {call}")


_REGISTRY: dict[str, ToyJobService] = {}
_REGISTRY_LOCK = threading.Lock()


def toy_service(name: str, *, deduplicates: bool = True, reset: bool = False) -> ToyJobService:
    """Get (or create, or with ``reset`` replace) the registered service called ``name``."""
    with _REGISTRY_LOCK:
        if reset or name not in _REGISTRY:
            _REGISTRY[name] = ToyJobService(name=name, deduplicates=deduplicates)
        return _REGISTRY[name]


class ToyJobOperator(ResumableJobMixin, BaseOperator):
    """
    Run ``command`` as a job of the toy service ``service``; return ``{"job_id", "output"}``.

    :param service: name of a :func:`toy_service`.
    :param command: templated; part of the spec fingerprint.
    :param poll_interval: seconds between status calls.
    """

    template_fields = ("command",)
    external_id_key = "toy_job_id"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = "Toy"

    def __init__(self, *, service: str, command: str, poll_interval: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.command = command
        self.resumable_poll_interval = poll_interval

    @property
    def _svc(self) -> ToyJobService:
        return toy_service(self.service)

    def execute(self, context: Context) -> Any:
        return self.execute_resumable(context)

    def job_fingerprint(self, context: Context) -> str | None:
        return fingerprint_of({"command": self.command})

    def submit_job(self, context: Context) -> JsonValue:
        return self._svc.submit(self.command, self.submission_token)

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        return self._svc.status(str(external_id))

    def is_job_active(self, status: str) -> bool:
        return status in ACTIVE

    def is_job_succeeded(self, status: str) -> bool:
        return status == "SUCCEEDED"

    def get_job_result(self, external_id: JsonValue, context: Context) -> Any:
        return {"job_id": external_id, "output": f"ran {self._svc.jobs[str(external_id)].command}"}

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        self._svc.cancel(str(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        return "toy_job", {"service": self.service}


def cancel_toy_job_by_recipe(external_id: JsonValue, *, service: str) -> None:
    """The custodian's canceller ``toy_job`` (same process only: toy services live in memory)."""
    toy_service(service).cancel(str(external_id))


class ToyTaggedJobOperator(ToyJobOperator):
    """Like :class:`ToyJobOperator`, for a service without idempotency: finds jobs by their tag."""

    submission_is_idempotent: ClassVar[bool] = False

    def find_job(self, token: str, context: Context) -> JsonValue:
        return self._svc.find_by_tag(token)


class ToyDriver:
    """
    The contract kit's ``CloudDriver`` over a :class:`ToyJobService`: the smallest complete driver.

    .. versionadded:: 0.2.0
    """

    def __init__(self, service: ToyJobService) -> None:
        self.service = service

    def submitted_ids(self) -> list[JsonValue]:
        """Jobs the service created (a deduplicated resubmission adds none)."""
        return list(self.service.submissions)

    def cancelled_ids(self) -> list[JsonValue]:
        """Jobs the service was asked to cancel."""
        return list(self.service.cancels)

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        """End a job ``SUCCEEDED`` or ``FAILED``."""
        self.service.finish(str(external_id), succeeded=succeeded)

    def expire(self, external_id: JsonValue) -> None:
        """Forget a job."""
        self.service.expire(str(external_id))

    def state_of(self, external_id: JsonValue) -> str:
        """
        The job's state in the service (``EXPIRED`` once forgotten), for the contract kit.

        .. versionadded:: 0.5.0
        """
        job = self.service.jobs.get(str(external_id))
        return "EXPIRED" if job is None else job.state

    def throttle_next_submit(self) -> None:
        """Refuse the next submit with :class:`ThrottledError` (nothing is created)."""
        self.service.throttle_next("submit")

    def set_realism(self, realism: Realism) -> None:
        """
        Make the service as unkind as ``realism`` (lag, throttling, page size, retention).

        .. versionadded:: 0.4.0
        """
        self.service.set_realism(realism)

    def not_found_lookalike(self) -> str | None:
        """
        The refusal :meth:`refuse_next_status_read_like_not_found` answers, in one line.

        .. versionadded:: 0.5.0
        """
        return f"ToyRequestError 'toy service: status refused: {REFUSAL}'"

    def refuse_next_status_read_like_not_found(self) -> None:
        """
        Refuse the next status call with :class:`ToyRequestError`; the job goes on.

        .. versionadded:: 0.5.0
        """
        self.service.refuse_next("status")

    def lose_next_submit_response(self) -> None:
        """
        Create the job of the next submit but answer with a transient error (a lost response).

        .. versionadded:: 0.4.0
        """
        self.service.lose_next_response("submit")
