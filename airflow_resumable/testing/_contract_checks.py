"""
The contract kit's checks of the operator class: the stock engine kept (in the bases, re-exported,
or called from a wrapper), a stock waiter kept in the poll loop, and a fingerprint that ignores a
templated field. Each failure is one line that names the defect, with its values.

Private: import the public names from :mod:`airflow_resumable.testing.contract`.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_resumable.testing._contract_probe import ScenarioProbe

__all__ = [
    "ContractDefect",
    "check_operator_class",
    "fingerprint_misses",
    "stock_classes",
    "stock_tripwires",
]

#: Methods that must come from a resumable class: a stock operator's version bypasses the engine.
_ENGINE_METHODS = ("execute", "execute_resumable", "poll_until_complete", "on_kill")
#: Stock methods that must never run in a scenario, with what running them does.
_STOCK_ONLY = {
    "execute": "the stock execute submits and waits outside the resumable engine (a second job on "
    "every retry, no checkpoint); let the engine run: AwsJobMixin.execute, or return "
    "self.execute_resumable(context)",
    "execute_complete": "the stock execute_complete finishes a deferral outside the engine; "
    "AwsJobMixin.execute_complete resumes through it",
    "on_kill": "the stock on_kill cancels the job on a worker's SIGTERM, which must be a checkpoint; "
    "leave on_kill to the mixin (it cancels only after a user's stop)",
}


class ContractDefect(Exception):
    """Raised inside a try by the kit's tripwires: the try ends at once, the defect is reported."""


def _is_resumable(klass: type) -> bool:
    from airflow_resumable.mixin import ResumableJobMixin

    return issubclass(klass, ResumableJobMixin) or klass.__module__.split(".")[0] == "airflow_resumable"


def stock_classes(operator_class: type) -> list[type]:
    """The stock operator classes in the MRO (not resumable, not Airflow's BaseOperator and kin)."""
    from airflow.sdk import BaseOperator

    return [
        klass
        for klass in operator_class.__mro__
        if isinstance(klass, type)
        and issubclass(klass, BaseOperator)
        and not _is_resumable(klass)
        and not klass.__module__.startswith(("airflow.sdk", "airflow.models"))
    ]


def check_operator_class(operator_class: type) -> None:
    """
    Fail at once when the operator's engine methods are the stock operator's.

    ``class MyOperator(StockOperator, ResumableJobMixin)`` gives the stock ``execute`` (and, for a
    stock class built on Airflow's core mixin, its ``execute_resumable`` and poll loop)
    precedence: the resumable engine never runs. So does ``execute = StockOperator.execute`` in a
    resumable class. ``on_kill`` must be the mixin's too: the stock one cancels on every SIGTERM.

    :raises AssertionError: naming the method, the class it comes from and the fix.
    """
    from airflow_resumable.mixin import ResumableJobMixin

    if not issubclass(operator_class, ResumableJobMixin):
        raise AssertionError(
            f"{operator_class.__name__} is not a subclass of airflow_resumable.mixin.ResumableJobMixin"
        )
    stock = stock_classes(operator_class)
    for name in _ENGINE_METHODS:
        owner = next(klass for klass in operator_class.__mro__ if name in vars(klass))
        if not _is_resumable(owner):
            raise AssertionError(
                f"{operator_class.__name__}.{name} comes from {owner.__module__}.{owner.__qualname__}, "
                f"not from a resumable class: put the resumable mixin (or AwsJobMixin) before the stock "
                f"operator in the bases, and do not override {name} with the stock one "
                f"(MRO: {[klass.__name__ for klass in operator_class.__mro__[:6]]})."
            )
        # Airflow's operator metaclass wraps execute: compare what is under the wrappers.
        method = inspect.unwrap(vars(owner)[name])
        source = next(
            (klass for klass in stock if name in vars(klass) and inspect.unwrap(vars(klass)[name]) is method),
            None,
        )
        if source is not None:
            raise AssertionError(
                f"{owner.__qualname__}.{name} is {source.__qualname__}.{name} re-exported: "
                f"{_STOCK_ONLY.get(name, 'the stock engine bypasses the resumable one')}."
            )


@contextmanager
def stock_tripwires(operator_class: type, probe: ScenarioProbe) -> Iterator[None]:
    """
    For the ``with`` block, make the stock ``execute``, ``execute_complete`` and ``on_kill`` of
    ``operator_class``'s bases, and a botocore waiter inside ``poll_until_complete``, end the try
    with a :class:`ContractDefect` that names who called them (a wrapper that calls the stock
    method passes :func:`check_operator_class`; this catches it on its first call).
    """
    with ExitStack() as stack:
        for klass in stock_classes(operator_class):
            for name in _STOCK_ONLY:
                if name in vars(klass):
                    stack.enter_context(mock.patch.object(klass, name, _tripwire(klass, name, probe)))
        try:
            from botocore.waiter import Waiter
        except ImportError:  # no AWS here: no waiter to keep
            pass
        else:
            stack.enter_context(mock.patch.object(Waiter, "wait", _waiter_tripwire(Waiter.wait, probe)))
        yield


def _caller() -> str:
    frame = sys._getframe(2)
    return getattr(frame.f_code, "co_qualname", frame.f_code.co_name)


def _tripwire(klass: type, name: str, probe: ScenarioProbe) -> Callable[..., Any]:
    def tripwire(op: Any, *args: Any, **kwargs: Any) -> Any:
        message = (
            f"{type(op).__name__} called the stock {klass.__qualname__}.{name} (from {_caller()}): "
            f"{_STOCK_ONLY[name]}."
        )
        probe.defect(message)
        raise ContractDefect(message)

    return tripwire


def _waiter_tripwire(original: Callable[..., Any], probe: ScenarioProbe) -> Callable[..., Any]:
    def wait(waiter: Any, *args: Any, **kwargs: Any) -> Any:
        if probe.is_polling():
            message = (
                f"{type(probe.operator).__name__} waited with the botocore waiter "
                f"{getattr(waiter, 'name', '?')!r} inside poll_until_complete (from {_caller()}): a "
                f"stock waiter polls outside get_job_status, so a worker shutdown cannot checkpoint "
                f"and a user's stop is not seen; poll through the mixin (super().poll_until_complete)."
            )
            probe.defect(message)
            raise ContractDefect(message)
        return original(waiter, *args, **kwargs)

    return wait


_UNCHANGED = object()


def _changed(value: Any) -> Any:
    """A value of the same kind that differs from ``value``; ``_UNCHANGED`` for unset or flags."""
    if value is None or isinstance(value, bool):
        return _UNCHANGED
    if isinstance(value, str):
        return f"{value}-kit-changed"
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, dict):
        return {**value, "kit_changed": "1"}
    if isinstance(value, list | tuple):
        return type(value)([*value, value[-1] if value else "kit-changed"])
    return _UNCHANGED


def fingerprint_misses(
    operator_class: type, kwargs: dict[str, Any], outside_the_spec: frozenset[str]
) -> list[str]:
    """
    The templated fields whose change leaves ``job_fingerprint`` as it was, each as
    ``'field' (old → new)``. Every field of ``operator_class.template_fields`` that is set and not
    in ``outside_the_spec`` is changed in turn on a fresh operator, as rendering sets it; a change
    the operator refuses (an error) counts as read.

    :raises AssertionError: the fingerprint is None (spec-change detection off).
    """
    context: dict[str, Any] = {}
    base_operator = operator_class(task_id="fingerprint", **kwargs)
    base = base_operator.job_fingerprint(context)
    if base is None:
        raise AssertionError(
            f"{operator_class.__name__}.job_fingerprint returns None: a retry after the user changed "
            f"the job's spec would adopt the old job; hash the validated request"
        )
    misses = []
    for field in getattr(operator_class, "template_fields", ()):
        if field in outside_the_spec:
            continue
        old = getattr(base_operator, field, None)
        new = _changed(old)
        if new is _UNCHANGED:
            continue
        operator = operator_class(task_id="fingerprint", **kwargs)
        setattr(operator, field, new)
        try:
            fingerprint = operator.job_fingerprint(context)
        except Exception:  # refused by validation: the spec reads the field
            continue
        if fingerprint == base:
            misses.append(f"{field!r} ({_short(old)} → {_short(new)})")
    return misses


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
