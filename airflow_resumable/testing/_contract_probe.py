"""
The contract kit's instruments: the probe wrapped around an operator's hooks, the cloud driver
protocol, and the guards that make a broken operator fail fast instead of hanging.

Private: import the public names from :mod:`airflow_resumable.testing.contract`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from unittest import mock

from airflow_resumable.exceptions import JobNotFoundError
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing._contract_checks import ContractDefect, check_operator_class

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import JsonValue

    from airflow_resumable.testing.realism import Realism


__all__ = [
    "CloudDriver",
    "LossyCloudDriver",
    "MisleadingCloudDriver",
    "RealisticCloudDriver",
    "ScenarioProbe",
    "SimulatedWorkerCrash",
    "ThrottlingCloudDriver",
    "check_operator_class",
    "finish_on_first_poll",
]

SPEC_VARIABLE = "AIRFLOW_RESUMABLE_CONTRACT_SPEC"
#: A templated value for ``operator_kwargs``: it renders to the value of an Airflow Variable the kit
#: changes between tries to simulate a user who fixed the job's inputs.
SPEC_TEMPLATE = "{{ var.value.airflow_resumable_contract_spec }}"
_MAX_POLLS = 500
#: A job the kit ended that still reads as active this many times and seconds later is reported.
_READS_AFTER_FINISH = 10
_SECONDS_AFTER_FINISH = 2.0


class SimulatedWorkerCrash(Exception):
    """Raised by the kit inside a task to end a try the way a dying worker would."""


class CloudDriver(Protocol):
    """What the kit needs from a fake service: counts and control of remote jobs."""

    def submitted_ids(self) -> list[JsonValue]:
        """Ids of the jobs the service actually created, in order (duplicates show up here)."""

    def cancelled_ids(self) -> list[JsonValue]:
        """Ids of jobs the service was asked to cancel."""

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        """End a job with success or failure."""

    def expire(self, external_id: JsonValue) -> None:
        """Forget a job, as a service whose run history expired would."""


class ThrottlingCloudDriver(CloudDriver, Protocol):
    """
    A driver that can also throttle: the kit then checks that a throttled submit costs no retry.

    Optional: a driver without :meth:`throttle_next_submit` skips that one scenario.
    """

    def throttle_next_submit(self) -> None:
        """Answer the next submit call with the service's throttling error (nothing is created)."""


class RealisticCloudDriver(CloudDriver, Protocol):
    """
    A driver whose fake can be as unkind as the cloud it stands for: the kit's realism scenarios
    need it (a driver without it fails them, as kinder than its cloud).

    .. versionadded:: 0.4.0
    """

    def set_realism(self, realism: Realism) -> None:
        """
        Make the fake behave as ``realism`` says from now on: hide a new job from status and list
        calls for ``visibility_lag`` seconds, throttle status and list calls by rate and burst,
        page list calls at ``page_size``, forget finished jobs after ``retention``.
        """


class MisleadingCloudDriver(CloudDriver, Protocol):
    """
    A driver whose fake can refuse a status read with the look of "not found" while the job exists
    (``test_an_error_like_not_found_is_not_taken_for_it``).

    .. versionadded:: 0.5.0
    """

    def not_found_lookalike(self) -> str | None:
        """
        How the error :meth:`refuse_next_status_read_like_not_found` answers looks, in one line
        (e.g. ``"400 InvalidRequestException 'A required parameter ...'"``); None when the
        service's not-found answer is unmistakable (the scenario is then skipped).
        """
        ...

    def refuse_next_status_read_like_not_found(self) -> None:
        """
        Make the next status read answer an error that a careless not-found check takes for a
        job the service forgot (the not-found status or error code, another cause); the job
        itself stays as it is.
        """
        ...


class LossyCloudDriver(CloudDriver, Protocol):
    """
    A driver that can lose a response: the kit then proves a lost submit response makes one job.

    Optional: a driver without :meth:`lose_next_submit_response` skips those proof cases.

    .. versionadded:: 0.4.0
    """

    def lose_next_submit_response(self) -> None:
        """Create the job of the next submit call, then answer with a 5xx (or a lost connection)."""


PollHook = Callable[["ScenarioProbe", int, Any, int], None]


def _recorded_read(reads: list[str], read: Callable[[], Any]) -> Any:
    """``read()``, with what it did appended to ``reads`` (``raised X`` or ``returned S``)."""
    try:
        status = read()
    except Exception as err:
        reads.append(f"raised {type(err).__name__}")
        raise
    reads.append(f"returned {status!r}")
    return status


@dataclass
class ScenarioProbe:
    """
    Instrumentation of one operator class during one scenario.

    ``on_poll(probe, try_number, external_id, poll_index)`` runs before each status call made
    while polling (not the ones the attempt-start decision makes) and may finish the job or raise
    :class:`SimulatedWorkerCrash`; ``crash_after_submit`` lists the tries whose first submission is
    followed by a crash before the id is stored; ``namesake_after_submit`` lists the tries whose
    submission is followed by a second one of the same spec under another token (a newer namesake,
    recorded in ``namesakes``) before that crash, ``namesake_before_submit`` the tries whose
    submission is preceded by one (an older namesake). ``expired`` holds ids the scenario made the
    service forget; ``expired_reads`` what each status call on one of them did (``raised X`` or
    ``returned S``). ``unseen_reads`` counts the status calls on other jobs that raised
    JobNotFoundError (a young job the service does not show yet), ``visibility_waits`` the
    mixin's waits for a job not visible yet (also inside a provider's own status call),
    ``throttled_reads`` those the operator's ``is_throttling_error`` recognised;
    ``submitted_at`` holds when each job was accepted (``time.monotonic()``).
    """

    cloud: CloudDriver
    on_poll: PollHook
    crash_after_submit: set[int] = field(default_factory=set)
    namesake_after_submit: set[int] = field(default_factory=set)
    namesake_before_submit: set[int] = field(default_factory=set)
    fail_record_write_once: bool = False
    #: A SIGTERM to this process right after the first try's job id was stored (a worker shutdown
    #: within moments of the submit, before any read of the job); ``signalled_at`` says when.
    sigterm_after_persist: bool = False
    signalled_at: float | None = None
    polled: dict[int, list[JsonValue]] = field(default_factory=lambda: defaultdict(list))
    submitted: dict[int, list[JsonValue]] = field(default_factory=lambda: defaultdict(list))
    returned: list[Any] = field(default_factory=list)
    job_results: list[Any] = field(default_factory=list)
    failed_writes: int = 0
    executions: int = 0
    namesakes: list[JsonValue] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    expired_reads: list[str] = field(default_factory=list)
    #: The not-found lookalike the scenario made the service answer to the next status read (the
    #: driver's description of it), until that read has happened; ``lookalike_reads`` says what
    #: each such read did (``raised X`` or ``returned S``).
    lookalike: str | None = None
    lookalike_reads: list[str] = field(default_factory=list)
    unseen_reads: int = 0
    visibility_waits: int = 0
    throttled_reads: int = 0
    submitted_at: list[float] = field(default_factory=list)
    last_activity: float | None = None
    #: One line per defect the kit saw inside a try (a stock method called, a made-up state, a
    #: job read wrong); the scenario reports the first before anything else.
    defects: list[str] = field(default_factory=list)
    #: The jobs the kit ended through ``probe.cloud.finish``: id → (succeeded, when).
    finished: dict[str, tuple[bool, float]] = field(default_factory=dict)
    _reads_after_finish: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self.cloud = _FinishRecorder(self.cloud, self.finished)

    def defect(self, message: str) -> None:
        """Keep a defect the kit saw inside a try (reported before any other failure)."""
        if message not in self.defects:
            self.defects.append(message)

    def read_lookalike(self, op: Any, external_id: JsonValue, context: Any, read: Any) -> Any:
        """
        The status read the service answers with a not-found lookalike: one that raises
        ``JobNotFoundError`` for it is a defect (the job exists); anything else goes on.
        """
        described, self.lookalike = self.lookalike, None
        try:
            return _recorded_read(self.lookalike_reads, lambda: read(op, external_id, context))
        except JobNotFoundError as err:
            message = (
                f"not-found mistaken: {type(op).__name__}.get_job_status({external_id!r}) raised "
                f"JobNotFoundError on {described}, an answer the service also gives while the job "
                f"exists: tell not-found by its message too, not by the status or error code alone"
            )
            self.defect(message)
            raise ContractDefect(message) from err

    def is_polling(self) -> bool:
        """Whether the thread that asks is inside the operator's ``poll_until_complete``."""
        return bool(getattr(self._local, "polling", False))

    @property
    def try_number(self) -> int:
        """The try number of the task instance running in this thread."""
        return int(getattr(self._local, "try_number", 0))

    @property
    def attempt(self) -> int:
        """How many times ``execute`` has started in this scenario (reschedules included)."""
        return self.executions

    @property
    def context(self) -> Any:
        """The Airflow context of the try running in this thread."""
        return self._local.context

    @property
    def operator(self) -> Any:
        """The operator instance running in this thread."""
        return self._local.operator

    def check_finished_job(self, op: Any, external_id: Any, status: Any) -> None:
        """
        A job the kit ended must read as ended: if not, tell a fake that did not end it (or
        failed) from an operator that reads the wrong field, and end the try.

        :raises ContractDefect: the job reads as active ``_READS_AFTER_FINISH`` times and
            ``_SECONDS_AFTER_FINISH`` after it was ended, or as failed after a success.
        """
        key = str(external_id)
        if key not in self.finished:
            return
        succeeded, when = self.finished[key]
        if op.is_job_active(status):
            self._reads_after_finish[key] += 1
            reads = self._reads_after_finish[key]
            if reads < _READS_AFTER_FINISH or time.monotonic() - when < _SECONDS_AFTER_FINISH:
                return
            seen = f"still reads as active {reads} times and {time.monotonic() - when:.1f} s after"
        elif not succeeded or op.is_job_succeeded(status):
            # An ended job after a failure is not checked further: some services tell a failure
            # elsewhere than in the status (ECS: the containers' exit codes).
            return
        else:
            seen = "reads as failed after"
        ended = "success" if succeeded else "failure"
        message = (
            f"job {external_id!r} {seen} the kit ended it with {ended}: "
            f"{self._who_is_wrong(op, external_id, status)}"
        )
        self.defect(message)
        raise ContractDefect(message)

    def _who_is_wrong(self, op: Any, external_id: Any, status: Any) -> str:
        cloud: Any = self.cloud
        fake_errors = getattr(cloud, "fake_errors", None)
        errors = fake_errors() if fake_errors is not None else []
        if errors:
            return f"the fake failed, not the operator: {errors[0]}"
        state_of = getattr(cloud, "state_of", None)
        if state_of is None:
            return (
                f"{type(op).__name__}.get_job_status returned {status!r}; either the fake did not end "
                f"the job or the operator reads the wrong field (give the driver state_of(external_id) "
                f"so the kit can tell which)"
            )
        shown = state_of(external_id)
        if str(shown) == str(status) or not str(shown):
            return (
                f"the fake answers wrong, not the operator: the fake itself shows {shown!r} "
                f"(check the driver's finish and the job kind's write_state/read_state)"
            )
        return (
            f"the operator reads it wrong, not the fake: the fake shows {shown!r}, but "
            f"{type(op).__name__}.get_job_status returned {status!r} (read the service's state field)"
        )

    @contextmanager
    def install(self, operator_class: type) -> Iterator[None]:
        """Wrap the operator's hooks for the duration of a ``with`` block."""
        probe = self
        originals = {name: getattr(operator_class, name) for name in _WRAPPED}

        def execute(op: Any, context: Any) -> Any:
            probe.executions += 1
            probe._local.try_number = context["ti"].try_number
            probe._local.context = context
            probe._local.operator = op
            probe._local.polling = False
            probe.last_activity = time.monotonic()  # the stall watch starts here, not at the submit
            try:
                result = originals["execute"](op, context)
            except NotImplementedError as err:  # a hook left out: its message names it
                probe.defect(f"{type(op).__name__} leaves a required hook out: {err}")
                raise
            probe.returned.append(result)
            return result

        def submit_namesake(op: Any, context: Any) -> None:
            own_token = op.submission_token
            op.submission_token = "ar-" + uuid.uuid4().hex + uuid.uuid4().hex[:8]  # another intent
            try:
                probe.namesakes.append(originals["submit_job"](op, context))
            finally:
                op.submission_token = own_token

        def submit_job(op: Any, context: Any) -> Any:
            if probe.try_number in probe.namesake_before_submit:
                probe.namesake_before_submit.discard(probe.try_number)
                submit_namesake(op, context)
            external_id = originals["submit_job"](op, context)
            probe.submitted[probe.try_number].append(external_id)
            probe.submitted_at.append(time.monotonic())
            probe.last_activity = time.monotonic()
            if probe.try_number in probe.namesake_after_submit:
                probe.namesake_after_submit.discard(probe.try_number)
                submit_namesake(op, context)
            if probe.try_number in probe.crash_after_submit:
                probe.crash_after_submit.discard(probe.try_number)
                raise SimulatedWorkerCrash("worker died after the service accepted the job")
            return external_id

        def poll_until_complete(op: Any, external_id: Any, context: Any) -> Any:
            probe._local.polling = True
            probe._local.polls = 0
            try:
                return originals["poll_until_complete"](op, external_id, context)
            finally:
                probe._local.polling = False

        def get_job_status(op: Any, external_id: Any, context: Any) -> Any:
            if str(external_id) in probe.expired:
                status = _recorded_read(
                    probe.expired_reads, lambda: originals["get_job_status"](op, external_id, context)
                )
                message = (
                    f"get_job_status on an expired job: {type(op).__name__}.get_job_status"
                    f"({external_id!r}) returned {status!r} for a job the service no longer knows: "
                    f"raise airflow_resumable.exceptions.JobNotFoundError instead of a made-up state"
                )
                probe.defect(message)
                raise ContractDefect(message)
            if getattr(probe._local, "polling", False):
                probe.last_activity = time.monotonic()
                index = probe._local.polls
                probe._local.polls += 1
                if index >= _MAX_POLLS:
                    raise RuntimeError("the scenario never ended the job it was polling")
                if index == 0:
                    probe.polled[probe.try_number].append(external_id)
                probe.on_poll(probe, probe.try_number, external_id, index)
            if probe.lookalike is not None:
                return probe.read_lookalike(op, external_id, context, originals["get_job_status"])
            try:
                status = originals["get_job_status"](op, external_id, context)
                probe.check_finished_job(op, external_id, status)
                return status
            except JobNotFoundError:
                probe.unseen_reads += 1
                raise
            except Exception as err:
                if op.is_throttling_error(err):
                    probe.throttled_reads += 1
                raise

        def get_job_result(op: Any, external_id: Any, context: Any) -> Any:
            result = originals["get_job_result"](op, external_id, context)
            probe.job_results.append(result)
            return result

        def not_visible_yet(op: Any, *args: Any, **kwargs: Any) -> Any:
            probe.visibility_waits += 1
            probe.last_activity = time.monotonic()
            return originals["_not_visible_yet"](op, *args, **kwargs)

        replacements = {
            "_not_visible_yet": not_visible_yet,
            "execute": execute,
            "submit_job": submit_job,
            "poll_until_complete": poll_until_complete,
            "get_job_status": get_job_status,
            "get_job_result": get_job_result,
        }
        with _patched(operator_class, replacements, probe):
            yield


#: ``_not_visible_yet`` is the mixin's (private, same package): where it waits for a young job.
_WRAPPED = (
    "_not_visible_yet",
    "execute",
    "submit_job",
    "poll_until_complete",
    "get_job_status",
    "get_job_result",
)


@contextmanager
def _patched(operator_class: type, replacements: dict[str, Any], probe: ScenarioProbe) -> Iterator[None]:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor

    original_set = TaskStateStoreAccessor.set

    def flaky_set(store: Any, key: str, value: Any, **kwargs: Any) -> None:
        is_id_write = key == RECORD_KEY and isinstance(value, dict) and value.get("phase") == "submitted"
        if probe.fail_record_write_once and is_id_write:
            probe.fail_record_write_once = False
            probe.failed_writes += 1
            raise ConnectionError("injected: the API server refused the state-store write")
        original_set(store, key, value, **kwargs)
        if probe.sigterm_after_persist and is_id_write:
            import os
            import signal

            probe.sigterm_after_persist = False
            probe.signalled_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)  # Airflow's task-runner handler calls on_kill

    with ExitStack() as stack:
        for name, replacement in replacements.items():
            stack.enter_context(mock.patch.object(operator_class, name, replacement))
        stack.enter_context(mock.patch.object(TaskStateStoreAccessor, "set", flaky_set))
        yield


def finish_on_first_poll(succeeded: bool = True, *, on_try: int | None = None) -> PollHook:
    """A poll hook that ends the polled job at the first poll (of ``on_try``, or of any try)."""

    def hook(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
        if index == 0 and (on_try is None or try_number == on_try):
            probe.cloud.finish(external_id, succeeded=succeeded)

    return hook


class _FinishRecorder:
    """The scenario's driver, with every ``finish`` remembered (the kit checks the job then reads
    as ended); everything else is the driver's own."""

    def __init__(self, driver: CloudDriver, finished: dict[str, tuple[bool, float]]) -> None:
        self._driver = driver
        self._finished = finished

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        self._driver.finish(external_id, succeeded=succeeded)
        self._finished.setdefault(str(external_id), (succeeded, time.monotonic()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


class _StallWatch:
    """
    Ends a scenario whose submitted job sees no status call through ``get_job_status`` in time.

    A thread checks every 0.2 s; on a stall it fails every job the scenario submitted in the fake
    (so that whatever loop waits on them ends) and keeps the reason in ``stalled``.
    """

    def __init__(self, probe: ScenarioProbe, timeout: float) -> None:
        self.probe = probe
        self.timeout = timeout
        self.stalled: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="contract-stall-watch", daemon=True)

    def __enter__(self) -> _StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            last = self.probe.last_activity
            if last is None or time.monotonic() - last < self.timeout:
                continue
            submitted = [i for ids in self.probe.submitted.values() for i in ids]
            if not submitted:
                self.stalled = (
                    f"stalled: try {self.probe.try_number or 1} entered execute and reached neither "
                    f"submit_job nor a status call in {self.timeout:.0f} s: the operator waits outside "
                    f"the mixin's hooks before any job (a stock execute or waiter kept?); the kit ended "
                    f"the try with its execution timeout."
                )
                _end_the_try_now()
                self.probe.last_activity = time.monotonic()  # the next try gets its own time
                continue
            self.stalled = (
                f"stalled: no status call went through get_job_status for {self.timeout:.0f} s after "
                f"job(s) {submitted} were submitted (polls so far: {dict(self.probe.polled)}). The "
                f"operator waits outside the mixin's hooks, e.g. a stock poll loop or waiter kept in "
                f"poll_until_complete; the kit failed the jobs in the fake to end the scenario."
            )
            ended: list[str] = []
            while True:  # keep failing what later tries submit, until the scenario is over
                for external_id in [i for ids in self.probe.submitted.values() for i in ids]:
                    if str(external_id) not in ended:
                        ended.append(str(external_id))
                        # already ended or expired: nothing left to unblock
                        with contextlib.suppress(Exception):
                            self.probe.cloud.finish(external_id, succeeded=False)
                if self._done.wait(0.2):
                    return


def _end_the_try_now() -> None:
    """
    Fire the try's ``execution_timeout`` now (Airflow's timeout is a SIGALRM handler in the task's
    thread), so a try stuck before any job ends in seconds; without such a handler, do nothing.
    """
    import os
    import signal

    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        os.kill(os.getpid(), signal.SIGALRM)
