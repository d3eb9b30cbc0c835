"""
How unkind a fake cloud is: the realism layer shared by the fake Databricks and the moto controller.

Real services are not the fakes' old selves. Right after a submit a job may be missing from
list and describe calls for a while (eventual consistency); calls are throttled by rate and by
burst; listings come a page at a time; a finished job's history expires. A :class:`Realism`
value switches each behaviour on, per fake and per test::

    FakeDatabricks(realism=Realism.unkind())            # every behaviour at its test default
    MotoServer(realism=Realism(visibility_lag=10.0))    # only a 10 s visibility lag

``Realism.documented()`` (the fakes' default) keeps only what costs a test nothing: the services'
documented page sizes and not-found shapes. ``Realism.unkind()`` is the default of the contract
kit and of the chaos suite.

Every behaviour a fake reproduces names its public source in a :class:`Fidelity` entry;
``docs/testing/fidelity.md`` renders them (:func:`fidelity_rows`), so the page cannot drift from
the code.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "BEHAVIOURS",
    "Fidelity",
    "Realism",
    "TokenBucket",
    "fidelity_rows",
    "register_fidelity",
]

#: The behaviours every fake states its fidelity for, in the order of the docs page.
BEHAVIOURS = ("visibility_lag", "throttling", "pagination", "expiry", "not_found", "token_window")

Status = Literal["reproduced", "not reproduced", "not documented"]


@dataclass(frozen=True)
class Realism:
    """
    The realism of one fake; every field off means the fake answers at once, always, in full.

    :param visibility_lag: seconds a new job is missing from list, describe and get-by-id calls.
    :param throttle_rate: sustained status/list calls per second the service accepts (per
        service); None: no rate limit.
    :param throttle_burst: calls accepted at once before the rate applies (the bucket's size).
    :param page_size: items per page of every list call that pages (capped at the service's
        documented maximum); None: the service's documented default page size.
    :param retention: seconds a finished job stays visible; None: for ever.
    """

    visibility_lag: float = 0.0
    throttle_rate: float | None = None
    throttle_burst: int = 10
    page_size: int | None = None
    retention: float | None = None

    def __post_init__(self) -> None:
        if self.visibility_lag < 0:
            raise ValueError(f"visibility_lag must be >= 0, got {self.visibility_lag}")
        if self.throttle_rate is not None and self.throttle_rate <= 0:
            raise ValueError(f"throttle_rate must be > 0 or None, got {self.throttle_rate}")
        if self.throttle_burst < 1:
            raise ValueError(f"throttle_burst must be >= 1, got {self.throttle_burst}")
        if self.page_size is not None and self.page_size < 1:
            raise ValueError(f"page_size must be >= 1 or None, got {self.page_size}")
        if self.retention is not None and self.retention < 0:
            raise ValueError(f"retention must be >= 0 or None, got {self.retention}")

    @classmethod
    def documented(cls) -> Realism:
        """Documented page sizes and not-found shapes only: the fakes' default."""
        return cls()

    @classmethod
    def unkind(
        cls,
        *,
        visibility_lag: float = 2.0,
        throttle_rate: float | None = 20.0,
        throttle_burst: int = 10,
        page_size: int | None = 2,
        retention: float | None = None,
    ) -> Realism:
        """
        Every behaviour on, at values a test can afford: a 2 s lag, 20 calls/s after a burst of
        10, pages of 2 items (so a lookup must page). Expiry stays off unless asked (a job that
        expires mid-scenario ends it).
        """
        return cls(visibility_lag, throttle_rate, throttle_burst, page_size, retention)

    def evolve(self, **changes: float | int | None) -> Realism:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, float | int | None]:
        """The JSON form the control APIs take."""
        return {
            "visibility_lag": self.visibility_lag,
            "throttle_rate": self.throttle_rate,
            "throttle_burst": self.throttle_burst,
            "page_size": self.page_size,
            "retention": self.retention,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> Realism:
        """The inverse of :meth:`to_dict`; unknown keys are refused."""
        unknown = set(data) - set(cls().to_dict())
        if unknown:
            raise ValueError(f"unknown realism settings {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]


class TokenBucket:
    """
    A thread-safe token bucket: ``rate`` tokens a second, at most ``burst`` saved up.

    :meth:`take` answers whether a call may pass now, and if not, the seconds until it may
    (what a ``Retry-After`` header says).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was taken; else the seconds until the next one."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass(frozen=True)
class Fidelity:
    """
    What one fake does for one behaviour, and the public source that says the service does it.

    :param service: the service as the docs page names it (``AWS Batch``, ``Databricks Jobs``).
    :param behaviour: one of :data:`BEHAVIOURS`.
    :param status: ``reproduced``; ``not reproduced`` (the service does it, the fake does not:
        say why in ``note``); ``not documented`` (the service's reference is silent; ``note``
        says which unkind choice the fake made).
    :param how: what the fake does, in one sentence (the error shape, the page size).
    :param source: a public URL (API reference, upstream issue); required unless not documented.
    """

    service: str
    behaviour: str
    status: Status
    how: str
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {self.behaviour!r}")
        if self.status != "not documented" and not self.source.startswith("https://"):
            raise ValueError(f"{self.service} {self.behaviour}: a {self.status} behaviour names its source")


_FIDELITY: dict[tuple[str, str], Fidelity] = {}


def register_fidelity(*entries: Fidelity) -> None:
    """Declare what a fake does (its module calls this at import); one entry per service and behaviour."""
    for entry in entries:
        _FIDELITY[(entry.service, entry.behaviour)] = entry


def fidelity_rows() -> list[Fidelity]:
    """Every declared entry, by service, then in the order of :data:`BEHAVIOURS`."""
    import importlib

    for module in (
        "airflow_resumable.testing._aws_jobs",
        "airflow_resumable.testing.databricks",
        # Registered as a maintainer's kinds are (register_job_kind at import), not in _aws_jobs.
        "airflow_resumable.testing._aws_jobs_athena",
        "airflow_resumable.testing._aws_jobs_redshift_data",
    ):
        importlib.import_module(module)  # the fakes declare their entries at import

    return sorted(_FIDELITY.values(), key=lambda f: (f.service, BEHAVIOURS.index(f.behaviour)))
