"""
The contract kit's stock-parity half: what the stock operator leaves in XCom for a job (its return
value, its links, its own keys), declared once by the maintainer and checked on the fresh, the
reconnect and the adopt-succeeded paths.

Private: import the public names from :mod:`airflow_resumable.testing.contract`.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_resumable.testing._contract_checks import stock_classes
from airflow_resumable.testing.airflow_env import read_xcoms

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing._contract_probe import CloudDriver
    from airflow_resumable.testing.airflow_env import DagRunOutcome

__all__ = ["StockParityContract"]


class StockParityContract:
    """
    Declare :meth:`stock_xcoms` once; the kit compares what the resumable operator leaves with it
    after every path that ends with a job's result.

    .. versionadded:: 0.5.0
    """

    operator_class: ClassVar[Any]

    def stock_xcoms(self, cloud: CloudDriver, external_id: JsonValue) -> dict[str, Any] | None:
        """
        Every XCom the stock operator leaves when it runs ``external_id`` to success, by key:
        ``return_value`` (what the stock ``execute`` returns; leave it out when that is None), the
        links (``_link_<LinkName>``) and the operator's own keys. Use ``unittest.mock.ANY`` for a
        value the kit cannot know (a console URL with a region). None (the default): not declared,
        and ``test_stock_xcoms_are_declared`` fails.

        Where the stock operator leaves other XComs when it defers (Databricks adds ``job_id``),
        give the method a keyword parameter ``deferred: bool = False``: the deferrable path passes
        ``deferred=True``.

        Find it by running the stock operator once against the same fake, or from its ``execute``.
        """
        return None

    def test_stock_xcoms_are_declared(self, cloud: CloudDriver) -> None:
        """The maintainer said what the stock operator leaves, so every path can be checked against it."""
        if type(self).stock_xcoms is StockParityContract.stock_xcoms:
            raise AssertionError(
                f"{type(self).__name__} does not declare stock_xcoms(cloud, external_id): what the "
                f"stock {self._stock_name()} returns, pushes and links for a job; without it the kit "
                f"cannot tell a resumable operator that returns something else from a drop-in"
            )

    def _check_stock_xcoms(
        self, outcome: DagRunOutcome, cloud: CloudDriver, external_id: JsonValue, path: str
    ) -> None:
        """One line naming every XCom that differs from the stock operator's on ``path``."""
        declared = self.stock_xcoms
        if path == "deferrable" and "deferred" in inspect.signature(declared).parameters:
            expected = declared(cloud, external_id, deferred=True)  # type: ignore[call-arg]
        else:
            expected = declared(cloud, external_id)
        if expected is None:
            return
        pushed = read_xcoms(outcome.dag_id, outcome.run_id, "job")
        differences = [
            f"missing {key!r} (stock: {expected[key]!r})" for key in sorted(set(expected) - set(pushed))
        ]
        differences += [
            f"unexpected {key!r} = {pushed[key]!r}" for key in sorted(set(pushed) - set(expected))
        ]
        differences += [
            f"{key!r} is {pushed[key]!r}, stock {expected[key]!r}"
            for key in sorted(set(expected) & set(pushed))
            if expected[key] != pushed[key]  # expected on the left: mock.ANY equals anything
        ]
        if differences:
            raise AssertionError(
                f"{path} path: {self.operator_class.__name__} leaves other XComs than the stock "
                f"{self._stock_name()} for job {external_id!r}: {'; '.join(differences)}"
            )

    def _stock_name(self) -> str:
        stock = stock_classes(self.operator_class)
        return stock[0].__name__ if stock else "operator"
