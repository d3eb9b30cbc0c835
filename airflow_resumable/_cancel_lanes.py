"""
Cancel lanes: the custodian's cloud calls, one lane per connection, each call with a deadline.

**Purpose:** before 0.3.0 the custodian made its cancels one at a time on one pool thread with an
unbounded queue and no deadline: one hung cloud delayed every other cloud's cancels for ever, and a
scheduler with hung cancels did not exit until SIGKILL (``ThreadPoolExecutor`` joins its workers at
interpreter exit). Here a hung cloud costs at most a bounded number of threads of its own lane, the
other lanes go on, and nothing waits for it at exit.

**How it works:**

- :meth:`CancelLanes.submit` queues a call on a *lane* (one connection, e.g.
  ``"databricks_run:databricks_default"``) under a *key* (one job). A key is held from the submit
  until its call returns, so one job never has two cancels in flight.
- Each lane with work has a daemon *runner* thread that runs the lane's calls one at a time, in
  submission order, each on a fresh daemon thread, once fewer than ``max_parallel`` calls run over
  all lanes; then it waits for the call at most ``call_timeout`` seconds.
- A call that returns or raises: ``on_done`` gets ``ok`` or its ``error``. A call past its deadline:
  ``on_done`` gets ``timed_out=True`` at once, and the runner goes on with the lane's next call. The
  late call's thread is *abandoned* (Python cannot kill a thread): it is *stuck* until it returns,
  no longer counts toward ``max_parallel``, and keeps its key. With ``max_stuck_per_lane`` stuck
  threads a lane is *saturated*: it refuses submits, and its queued calls are not started but end
  at once with :class:`LaneSaturatedError`, until a stuck call returns.
- ``on_done`` runs on the lane's runner thread (keep it short: the lane waits for it), exactly once
  per accepted submit, unless the process ends first; its exceptions are logged and swallowed.
- :meth:`CancelLanes.shutdown` refuses later submits, ends the queued calls with
  :class:`LanesClosedError` (their ``on_done`` runs on their runner), waits for the runners at most
  ``timeout`` seconds and returns. Every thread is a daemon thread: the interpreter exits without
  waiting for any of them.

**Bounds:** threads ≤ ``max_parallel`` calls within their deadline + one runner per lane with work
+ ``max_stuck_per_lane`` stuck calls per lane; queued calls ≤ distinct keys (jobs in the ledger).

**What it does not do:** retry, back off or give up (:mod:`airflow_resumable._custodian_policy`;
the caller decides from the :class:`CancelOutcome`), or stop a hung call: each canceller bounds its
own cloud calls (botocore and Databricks hook timeouts), so an abandoned thread ends eventually.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CancelLanes", "CancelOutcome", "LaneSaturatedError", "LanesClosedError"]


@dataclass(frozen=True)
class CancelOutcome:
    """
    How one submitted call ended, as ``on_done`` gets it.

    :param key: the key it was submitted under.
    :param ok: the call returned.
    :param timed_out: the call passed its deadline (it may still return, or not, later).
    :param error: what the call raised, or :class:`LanesClosedError` / :class:`LaneSaturatedError`
        for a call that never started; None if ``ok`` or ``timed_out``.
    :param seconds: from the call's start to its end or its deadline (0 if it never started).
    """

    key: str
    ok: bool
    timed_out: bool
    error: BaseException | None
    seconds: float


class LanesClosedError(RuntimeError):
    """The lanes were shut down before this call started; it never ran."""


class LaneSaturatedError(RuntimeError):
    """The call's lane holds its maximum of hung calls; this one never ran."""


@dataclass(eq=False)
class _Call:
    key: str
    call: Callable[[], None]
    on_done: Callable[[CancelOutcome], None]
    #: Set by the call's thread when the call returned or raised.
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    started: float = 0.0
    #: Written under the lanes' lock: whether the call ended, and whether its runner gave up on it.
    ended: bool = False
    abandoned: bool = False


@dataclass(eq=False)
class _Lane:
    name: str
    queue: deque[_Call] = field(default_factory=deque)
    running: _Call | None = None
    stuck: int = 0
    runner: threading.Thread | None = None

    def idle(self) -> bool:
        return not self.queue and self.running is None and self.stuck == 0 and self.runner is None


class CancelLanes:
    """
    Run cancel calls per lane, in parallel over lanes, each with a deadline (see the module).

    :param max_parallel: calls running within their deadline at once, over all lanes.
    :param call_timeout: seconds a call may run before its outcome is ``timed_out``.
    :param max_stuck_per_lane: timed-out calls still running that saturate a lane.
    :param name: prefix of the threads' names.
    :raises ValueError: a bound below 1, or a timeout that is not a positive number.
    """

    def __init__(
        self,
        *,
        max_parallel: int = 8,
        call_timeout: float = 30.0,
        max_stuck_per_lane: int = 2,
        name: str = "airflow-resumable-custodian",
    ) -> None:
        if max_parallel < 1 or max_stuck_per_lane < 1:
            raise ValueError(
                f"max_parallel ({max_parallel}) and max_stuck_per_lane ({max_stuck_per_lane}) must be >= 1"
            )
        if not (math.isfinite(call_timeout) and call_timeout > 0):
            raise ValueError(f"call_timeout must be a positive number of seconds, got {call_timeout!r}")
        self.max_parallel = max_parallel
        self.call_timeout = call_timeout
        self.max_stuck_per_lane = max_stuck_per_lane
        self.name = name
        self._cond = threading.Condition()
        self._lanes: dict[str, _Lane] = {}
        #: Keys queued, running or stuck: a key is refused until its call returned.
        self._keys: set[str] = set()
        #: Calls within their deadline (what ``max_parallel`` bounds).
        self._running = 0
        self._runners = 0
        self._closed = False

    # ------------------------------------------------------------------ public
    def submit(
        self, lane: str, key: str, call: Callable[[], None], on_done: Callable[[CancelOutcome], None]
    ) -> bool:
        """
        Queue ``call`` on ``lane``; ``on_done`` gets its :class:`CancelOutcome` exactly once.

        :param lane: the connection the call uses (calls of one lane run one at a time).
        :param key: the job it cancels; one call per key at a time.
        :param call: the cancel; its return value is ignored, an exception is its failure.
        :param on_done: called on the lane's runner thread with the outcome.
        :return: False, and nothing queued, when the lanes are shut down, ``key`` is queued,
            running or stuck, or ``lane`` is saturated by stuck calls. The caller tries again later;
            a refusal is not a failure of the cancel.
        """
        with self._cond:
            if self._closed or key in self._keys:
                return False
            state = self._lanes.get(lane)
            if state is not None and state.stuck >= self.max_stuck_per_lane:
                return False
            if state is None:
                state = self._lanes[lane] = _Lane(lane)
            item = _Call(key, call, on_done)
            state.queue.append(item)
            self._keys.add(key)
            if state.runner is None:
                runner = threading.Thread(
                    target=self._run_lane, args=(state,), name=f"{self.name}:{lane}", daemon=True
                )
                try:
                    runner.start()
                except RuntimeError:  # no more threads in this process: refuse, keep nothing
                    state.queue.pop()
                    self._keys.discard(key)
                    self._drop_if_idle(state)
                    return False
                state.runner = runner
                self._runners += 1
            return True

    def shutdown(self, timeout: float = 2.0) -> None:
        """
        Refuse later submits, end queued calls unrun, and wait at most ``timeout`` s for the runners.

        Returns within ``timeout`` whatever the calls do; a call still running is left to its
        daemon thread (its ``on_done`` still runs, at its end or deadline, if the process lives).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._runners:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)

    def busy(self) -> dict[str, int]:
        """Lane → calls queued or running within their deadline (lanes with none left out)."""
        with self._cond:
            counts = {
                name: len(lane.queue) + (lane.running is not None) for name, lane in self._lanes.items()
            }
        return {name: count for name, count in counts.items() if count}

    def stuck(self) -> dict[str, int]:
        """Lane → timed-out calls still running (lanes with none left out)."""
        with self._cond:
            return {name: lane.stuck for name, lane in self._lanes.items() if lane.stuck}

    # ------------------------------------------------------------------ runner
    def _run_lane(self, lane: _Lane) -> None:
        try:
            while True:
                item, unrun = self._next(lane)
                for call, error in unrun:
                    self._deliver(call, CancelOutcome(call.key, False, False, error, 0.0))
                if item is None:
                    if not unrun:
                        return
                    continue
                self._deliver(item, self._run_one(lane, item))
        finally:
            with self._cond:
                self._runners -= 1
                self._cond.notify_all()

    def _next(self, lane: _Lane) -> tuple[_Call | None, list[tuple[_Call, BaseException]]]:
        """The lane's next call, once a slot is free; or the calls that will never run; or nothing."""
        with self._cond:
            while True:
                if not lane.queue:
                    lane.runner = None
                    self._drop_if_idle(lane)
                    return None, []
                if self._closed or lane.stuck >= self.max_stuck_per_lane:
                    error: BaseException = (
                        LanesClosedError(f"the custodian's cancel lanes shut down ({lane.name})")
                        if self._closed
                        else LaneSaturatedError(
                            f"{lane.stuck} cancel calls of {lane.name} passed their deadline and still run"
                        )
                    )
                    unrun = [(call, error) for call in lane.queue]
                    lane.queue.clear()
                    self._keys.difference_update(call.key for call, _ in unrun)
                    return None, unrun
                if self._running < self.max_parallel:
                    item = lane.queue.popleft()
                    lane.running = item
                    self._running += 1
                    return item, []
                self._cond.wait()

    def _run_one(self, lane: _Lane, item: _Call) -> CancelOutcome:
        item.started = time.monotonic()
        thread = threading.Thread(
            target=self._call, args=(lane, item), name=f"{self.name}:{lane.name}:call", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as err:  # no more threads: the call failed without running
            with self._cond:
                self._finish(lane, item)
            return CancelOutcome(item.key, False, False, err, 0.0)
        item.done.wait(self.call_timeout)
        with self._cond:
            if item.ended:
                self._finish(lane, item)
                ok = item.error is None
                return CancelOutcome(item.key, ok, False, item.error, time.monotonic() - item.started)
            item.abandoned = True
            lane.running = None
            lane.stuck += 1
            self._running -= 1
            self._cond.notify_all()
        _log().warning(
            "A cancel call passed its deadline; its lane goes on without it",
            lane=lane.name,
            key=item.key,
            deadline=self.call_timeout,
            stuck=lane.stuck,
        )
        return CancelOutcome(item.key, False, True, None, self.call_timeout)

    def _finish(self, lane: _Lane, item: _Call) -> None:
        """Under the lock: a call its runner waited for is over; free its slot and its key."""
        lane.running = None
        self._running -= 1
        self._keys.discard(item.key)
        self._cond.notify_all()

    def _call(self, lane: _Lane, item: _Call) -> None:
        try:
            item.call()
        except BaseException as err:  # every outcome goes to on_done; nothing escapes a thread
            item.error = err
        with self._cond:
            item.ended = True
            late = item.abandoned
            if late:
                lane.stuck -= 1
                self._keys.discard(item.key)
                self._drop_if_idle(lane)
                self._cond.notify_all()
        item.done.set()
        if late:
            _log().info(
                "A cancel call that had passed its deadline ended",
                lane=lane.name,
                key=item.key,
                ok=item.error is None,
                error=None if item.error is None else repr(item.error),
                seconds=round(time.monotonic() - item.started, 3),
            )

    def _drop_if_idle(self, lane: _Lane) -> None:
        """Under the lock: forget a lane with nothing queued, running or stuck."""
        if lane.idle() and self._lanes.get(lane.name) is lane:
            del self._lanes[lane.name]

    @staticmethod
    def _deliver(item: _Call, outcome: CancelOutcome) -> None:
        try:
            item.on_done(outcome)
        except Exception:
            _log().exception("A cancel's on_done callback failed", key=item.key, outcome=repr(outcome))


def _log() -> Any:
    import structlog

    return structlog.get_logger("airflow_resumable.custodian")
