"""The custodian's cancel lanes: per-connection lanes, a deadline per call, bounded hung threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest

from airflow_resumable._cancel_lanes import CancelLanes, CancelOutcome, LaneSaturatedError, LanesClosedError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Generous bound for "at once" on a loaded two-core machine; nothing below waits it out.
PROMPTLY = 5.0


class Outcomes:
    """Collects on_done outcomes by key and lets a test await each one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self.by_key: dict[str, list[CancelOutcome]] = {}

    def _event(self, key: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())

    def __call__(self, outcome: CancelOutcome) -> None:
        with self._lock:
            self.by_key.setdefault(outcome.key, []).append(outcome)
        self._event(outcome.key).set()

    def wait(self, key: str, timeout: float = PROMPTLY) -> CancelOutcome:
        """The outcome of ``key``, once on_done got it; fails the test after ``timeout`` seconds."""
        assert self._event(key).wait(timeout), f"no outcome for {key} within {timeout} s"
        (outcome,) = self.by_key[key]
        return outcome


class Gate:
    """A call that blocks until the test opens the gate; records that it started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.returned = threading.Event()

    def __call__(self) -> None:
        self.started.set()
        self.opened.wait()
        self.returned.set()


def eventually(predicate: Callable[[], bool], timeout: float = PROMPTLY) -> None:
    """Wait until ``predicate()`` holds (checked every 10 ms), or fail."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        pause.wait(0.01)


def nothing() -> None:
    """A cancel that lands at once."""


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    """Gates the test creates; all opened at the end, so no hung thread outlives the test."""
    made: list[Gate] = []
    yield made
    for gate in made:
        gate.opened.set()


@pytest.fixture
def gate(gates: list[Gate]) -> Callable[[], Gate]:
    """A factory of gates that are opened when the test ends."""

    def make() -> Gate:
        made = Gate()
        gates.append(made)
        return made

    return make


@pytest.fixture
def lanes() -> Iterator[CancelLanes]:
    """Lanes with a deadline long enough that no healthy call meets it; shut down at the end."""
    made = CancelLanes(max_parallel=4, call_timeout=30.0)
    yield made
    made.shutdown(timeout=0.5)


class TestOneHungCloud:
    def test_other_lanes_finish_while_one_hangs(self, lanes: CancelLanes, gate: Callable[[], Gate]) -> None:
        """A call that never returns in lane A does not delay lane B's calls."""
        hung = gate()
        outcomes = Outcomes()
        assert lanes.submit("aws:hung", "a-1", hung, outcomes)
        assert hung.started.wait(PROMPTLY)
        for n in range(3):
            assert lanes.submit("databricks:ok", f"b-{n}", nothing, outcomes)
        for n in range(3):
            assert outcomes.wait(f"b-{n}", timeout=PROMPTLY).ok  # A hangs for ever: any bound proves it
        assert "a-1" not in outcomes.by_key
        assert lanes.busy() == {"aws:hung": 1}

    def test_a_call_past_its_deadline_is_reported_at_once(self, gate: Callable[[], Gate]) -> None:
        """on_done gets timed_out=True at the deadline, and the lane runs its next call."""
        lanes = CancelLanes(call_timeout=0.2)
        hung = gate()
        outcomes = Outcomes()
        assert lanes.submit("aws:hung", "a-1", hung, outcomes)
        assert lanes.submit("aws:hung", "a-2", nothing, outcomes)
        late = outcomes.wait("a-1")
        assert (late.ok, late.timed_out, late.error, late.seconds) == (False, True, None, 0.2)
        assert outcomes.wait("a-2").ok
        assert lanes.stuck() == {"aws:hung": 1}
        assert not hung.returned.is_set()
        lanes.shutdown()

    def test_a_late_call_that_returns_frees_its_key_and_lane(self, gate: Callable[[], Gate]) -> None:
        """A timed-out call keeps its key until it returns; then the job can be submitted again."""
        lanes = CancelLanes(call_timeout=0.1, max_stuck_per_lane=1)
        hung = gate()
        outcomes = Outcomes()
        assert lanes.submit("aws:slow", "a-1", hung, outcomes)
        assert outcomes.wait("a-1").timed_out
        assert not lanes.submit("aws:slow", "a-1", nothing, outcomes)
        assert not lanes.submit("aws:slow", "a-2", nothing, outcomes)
        hung.opened.set()
        eventually(lambda: not lanes.stuck())
        again = Outcomes()
        assert lanes.submit("aws:slow", "a-1", nothing, again)
        assert again.wait("a-1").ok
        assert outcomes.by_key == {"a-1": [outcomes.by_key["a-1"][0]]}  # the late return adds nothing
        lanes.shutdown()


class TestBounds:
    def test_at_most_max_parallel_calls_run(self, gate: Callable[[], Gate]) -> None:
        """With max_parallel=2, two of three lanes' calls run; the third starts only when one ends."""
        lanes = CancelLanes(max_parallel=2)
        calls = {lane: gate() for lane in ("l1", "l2", "l3")}
        outcomes = Outcomes()
        for lane, call in calls.items():
            assert lanes.submit(lane, lane, call, outcomes)
        # Which two lanes get the slots is up to the runners' race; that only two do is not.
        eventually(lambda: sum(c.started.is_set() for c in calls.values()) == 2)
        (waiting,) = [lane for lane, call in calls.items() if not call.started.is_set()]
        assert not calls[waiting].started.wait(0.2)
        running = [lane for lane in calls if lane != waiting]
        calls[running[0]].opened.set()
        assert outcomes.wait(running[0]).ok
        assert calls[waiting].started.wait(PROMPTLY)
        calls[running[1]].opened.set()
        calls[waiting].opened.set()
        assert outcomes.wait(running[1]).ok and outcomes.wait(waiting).ok
        lanes.shutdown()

    def test_calls_of_one_lane_run_one_at_a_time_in_order(self, lanes: CancelLanes) -> None:
        """One connection's cancels never overlap, and run in submission order."""
        order: list[str] = []
        running = threading.Semaphore(1)

        def call(key: str) -> Callable[[], None]:
            def run() -> None:
                assert running.acquire(blocking=False), "two calls of one lane overlapped"
                order.append(key)
                running.release()

            return run

        outcomes = Outcomes()
        keys = [f"k{n}" for n in range(6)]
        for key in keys:
            assert lanes.submit("one", key, call(key), outcomes)
        assert all(outcomes.wait(key).ok for key in keys)
        assert order == keys

    def test_hung_threads_per_lane_are_bounded(self, gate: Callable[[], Gate]) -> None:
        """After max_stuck_per_lane timeouts the lane refuses and ends its queue unrun; others go on."""
        lanes = CancelLanes(call_timeout=0.1, max_stuck_per_lane=2)
        calls = [gate() for _ in range(4)]
        outcomes = Outcomes()
        for n, call in enumerate(calls):
            assert lanes.submit("aws:hung", f"a-{n}", call, outcomes)
        assert outcomes.wait("a-0").timed_out and outcomes.wait("a-1").timed_out
        for key, call in (("a-2", calls[2]), ("a-3", calls[3])):
            unrun = outcomes.wait(key)
            assert (unrun.ok, unrun.timed_out) == (False, False)
            assert isinstance(unrun.error, LaneSaturatedError) and not call.started.is_set()
        assert lanes.stuck() == {"aws:hung": 2}
        assert not lanes.submit("aws:hung", "a-4", nothing, outcomes)
        assert lanes.submit("gcp:ok", "b-1", nothing, outcomes) and outcomes.wait("b-1").ok
        hung_calls = [
            t for t in threading.enumerate() if t.name == "airflow-resumable-custodian:aws:hung:call"
        ]
        assert len(hung_calls) == 2
        calls[0].opened.set()
        eventually(lambda: lanes.stuck() == {"aws:hung": 1})
        assert lanes.submit("aws:hung", "a-4", nothing, outcomes) and outcomes.wait("a-4").ok
        lanes.shutdown()


class TestKeysAndCallbacks:
    def test_a_key_queued_or_running_is_refused(self, lanes: CancelLanes, gate: Callable[[], Gate]) -> None:
        """A second submit of a job in flight, in any lane, queues nothing and returns False."""
        running, queued = gate(), gate()
        outcomes = Outcomes()
        assert lanes.submit("l", "job-1", running, outcomes)
        assert lanes.submit("l", "job-2", queued, outcomes)
        assert running.started.wait(PROMPTLY)
        assert not lanes.submit("l", "job-1", nothing, outcomes)
        assert not lanes.submit("other", "job-2", nothing, outcomes)
        assert lanes.busy() == {"l": 2}
        running.opened.set()
        queued.opened.set()
        assert outcomes.wait("job-1").ok and outcomes.wait("job-2").ok
        assert lanes.submit("l", "job-1", nothing, Outcomes())

    def test_an_error_of_the_call_is_its_outcome(self, lanes: CancelLanes) -> None:
        """What the call raised comes back in the outcome, not as an exception of the lanes."""
        error = ConnectionError("throttled")

        def failing() -> None:
            raise error

        outcomes = Outcomes()
        assert lanes.submit("l", "k", failing, outcomes)
        outcome = outcomes.wait("k")
        assert (outcome.ok, outcome.timed_out, outcome.error) == (False, False, error)

    def test_a_failing_on_done_is_swallowed_and_the_lane_goes_on(self, lanes: CancelLanes) -> None:
        """An exception in on_done is logged; the lane's next call still runs and reports."""
        calls: list[CancelOutcome] = []

        def broken(outcome: CancelOutcome) -> None:
            calls.append(outcome)
            raise RuntimeError("bug in the caller")

        outcomes = Outcomes()
        assert lanes.submit("l", "k1", nothing, broken)
        assert lanes.submit("l", "k2", nothing, outcomes)
        assert outcomes.wait("k2").ok
        assert [outcome.key for outcome in calls] == ["k1"]

    def test_invalid_bounds_are_refused(self) -> None:
        """A bound below one or a timeout that is not a positive number is a ValueError."""
        for kwargs in ({"max_parallel": 0}, {"max_stuck_per_lane": 0}, {"call_timeout": 0.0}):
            with pytest.raises(ValueError):
                CancelLanes(**kwargs)
        with pytest.raises(ValueError):
            CancelLanes(call_timeout=float("nan"))


class TestShutdown:
    def test_returns_within_its_timeout_with_a_hung_call(self, gate: Callable[[], Gate]) -> None:
        """shutdown(0.3) returns in time; queued calls end unrun; later submits are refused."""
        lanes = CancelLanes(call_timeout=60.0)
        hung = gate()
        outcomes = Outcomes()
        assert lanes.submit("aws:hung", "a-1", hung, outcomes)
        assert lanes.submit("aws:hung", "a-2", nothing, outcomes)
        assert hung.started.wait(PROMPTLY)
        started = time.monotonic()
        lanes.shutdown(timeout=0.3)
        assert time.monotonic() - started < 1.0
        assert not lanes.submit("gcp:ok", "b-1", nothing, outcomes)
        hung.opened.set()
        assert outcomes.wait("a-1").ok
        assert isinstance(outcomes.wait("a-2").error, LanesClosedError)

    def test_a_process_with_a_hung_lane_exits_promptly(self) -> None:
        """The interpreter exits at once with a call hung for good: every lane thread is a daemon."""
        script = textwrap.dedent(
            """
            import threading
            from airflow_resumable._cancel_lanes import CancelLanes

            lanes = CancelLanes(call_timeout=3600.0)
            started = threading.Event()

            def hang():
                started.set()
                threading.Event().wait()

            assert lanes.submit("aws:hung", "a-1", hang, lambda outcome: None)
            assert lanes.submit("aws:hung", "a-2", hang, lambda outcome: None)
            assert started.wait(10)
            lanes.shutdown(timeout=0.5)
            print("EXITING", flush=True)
            """
        )
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=10, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "EXITING"
        assert time.monotonic() - started < 10
