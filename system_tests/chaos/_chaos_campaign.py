"""
Run many chaos cases at once on the one Airflow cluster, and hand each test its outcome.

Cases are independent DAG runs, so they run concurrently, bounded by executor slots (a mapped
case takes three). Two things are shared and therefore scheduled:

- **slots**: at most ``slot_limit`` task instances of chaos cases run at once (the cluster's
  LocalExecutor has one more, so a killed worker's replacement never waits);
- **resources**: every case uses its fault domain (the fake Databricks, or one AWS service), and
  a deferrable case also the triggerer. A fake cloud's fault injection is per endpoint, not per
  job: a case that injects one (the 5xx storm) needs its domain alone; a case that restarts the
  triggerer needs the triggerer alone. No other case using such a resource starts while an
  exclusive case of it waits or runs (writer preference).

Cases start in the order given (the tests' order), as soon as both allow; a case waiting for
slots holds back the cases behind it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Planned:
    """
    One case to run: its id, the slots it takes, the resources it uses, and how to run it.

    :param uses: the shared resources the case uses (its fault domain, ``triggerer``...).
    :param exclusive: those of ``uses`` it needs alone.
    """

    case_id: str
    slots: int
    uses: frozenset[str]
    exclusive: frozenset[str]
    run: Callable[[], Any]


class Campaign:
    """
    A scheduler thread plus one worker thread per running case.

    :param planned: the cases, in the order they should start.
    :param slot_limit: task instances of cases running at once.
    :param stopped: set by :meth:`stop`; cases watch it in their waits.
    """

    def __init__(self, planned: list[Planned], slot_limit: int, stopped: threading.Event) -> None:
        for case in planned:
            if case.slots > slot_limit:
                raise ValueError(f"{case.case_id} needs {case.slots} slots, the limit is {slot_limit}")
            if not case.exclusive <= case.uses:
                raise ValueError(f"{case.case_id} needs alone what it does not use: {case.exclusive}")
        self._pending = list(planned)
        self._running: list[Planned] = []
        self._threads: list[threading.Thread] = []
        self._results: dict[str, tuple[bool, Any]] = {}
        self._started_at: dict[str, float] = {}
        self._slot_limit = slot_limit
        self._cond = threading.Condition()
        self.stopped = stopped
        self._scheduler = threading.Thread(target=self._schedule, name="chaos-scheduler", daemon=True)

    def start(self) -> Campaign:
        self._scheduler.start()
        return self

    def _next(self) -> int | None:
        """
        The first pending case that may start now, or None.

        A case waiting for a resource is passed over; a case waiting for slots is not (the later
        ones would take the slots as they free up, and a three-slot case would starve). A case
        waits for a resource while a running case holds it alone, while it needs it alone and a
        running case uses it, or while an earlier pending case needs it alone.
        """
        free = self._slot_limit - sum(r.slots for r in self._running)
        for index, case in enumerate(self._pending):
            blocked = any(r.exclusive & case.uses or case.exclusive & r.uses for r in self._running) or any(
                q.exclusive & case.uses for q in self._pending[:index]
            )
            if blocked:
                continue
            return index if case.slots <= free else None
        return None

    def _schedule(self) -> None:
        with self._cond:
            while self._pending and not self.stopped.is_set():
                index = self._next()
                if index is None:
                    self._cond.wait(timeout=1.0)
                    continue
                case = self._pending.pop(index)
                self._running.append(case)
                self._started_at[case.case_id] = time.monotonic()
                thread = threading.Thread(target=self._work, args=(case,), name=case.case_id, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _work(self, case: Planned) -> None:
        try:
            result: tuple[bool, Any] = (True, case.run())
        except BaseException as error:  # handed to the test, which re-raises it
            result = (False, error)
        with self._cond:
            self._running.remove(case)
            self._results[case.case_id] = result
            self._cond.notify_all()

    def result(self, case_id: str, timeout: float) -> Any:
        """
        Wait (bounded) for one case and return its outcome; re-raise what the case raised.

        :raises TimeoutError: the case has not ended within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while case_id not in self._results:
                left = deadline - time.monotonic()
                if left <= 0:
                    state = "running" if case_id in self._started_at else "not started"
                    raise TimeoutError(f"chaos case {case_id} has not ended after {timeout:.0f}s ({state})")
                self._cond.wait(timeout=min(left, 1.0))
            ok, value = self._results[case_id]
        if not ok:
            raise value
        return value

    def stop(self, timeout: float = 60.0) -> None:
        """Start nothing more, tell running cases to give up, and wait (bounded) for them."""
        self.stopped.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in [self._scheduler, *self._threads]:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))
