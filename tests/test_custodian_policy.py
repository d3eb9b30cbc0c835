"""The custodian's limits: backoff, give-up by elapsed time, connections, configured bounds."""

from __future__ import annotations

import pytest

from airflow_resumable import RecipeRefusedError
from airflow_resumable._custodian_policy import (
    CustodianLimits,
    clamp_call_timeout,
    next_attempt_delay,
    require_connection,
    should_give_up,
)

NOW = 1_800_000_000.0
HOUR = 3600.0


class TestBackoff:
    @pytest.mark.parametrize(
        ("failures", "delay"),
        [
            (-1, 0.0),
            (0, 0.0),
            (1, 5.0),
            (2, 10.0),
            (3, 20.0),
            (4, 40.0),
            (5, 80.0),
            (6, 160.0),
            (7, 300.0),
            (8, 300.0),
            (10**9, 300.0),
        ],
    )
    def test_delay_doubles_from_five_seconds_to_five_minutes(self, failures: int, delay: float) -> None:
        """No wait before the first attempt, then 5 s doubling, capped at 300 s even for huge counts."""
        assert next_attempt_delay(failures) == delay


class TestGiveUp:
    @pytest.mark.parametrize(
        ("first_failure_at", "give_up_after", "expected"),
        [
            (NOW, HOUR, False),
            (NOW - HOUR + 1, HOUR, False),
            (NOW - HOUR, HOUR, True),
            (NOW - 10 * HOUR, HOUR, True),
            (NOW, 0.0, True),
            (NOW - 1, -5.0, True),
        ],
        ids=["just-failed", "one-second-left", "window-over", "long-over", "zero-window", "negative-window"],
    )
    def test_gives_up_once_the_window_since_the_first_failure_passed(
        self, first_failure_at: float, give_up_after: float, expected: bool
    ) -> None:
        """The give-up counts wall-clock seconds since the first failure, not sweeps."""
        assert should_give_up(first_failure_at, NOW, give_up_after) is expected

    @pytest.mark.parametrize(
        "first_failure_at",
        [NOW + 1, NOW + 100 * HOUR, float("inf"), float("-inf"), float("nan")],
        ids=["one-second-ahead", "far-future", "inf", "minus-inf", "nan"],
    )
    def test_an_edited_first_failure_counts_as_now(self, first_failure_at: float) -> None:
        """A time in the future or not finite neither gives up at once nor postpones for ever."""
        assert should_give_up(first_failure_at, NOW, HOUR) is False
        assert should_give_up(first_failure_at, NOW, 0.0) is True


class TestConnections:
    @pytest.mark.parametrize("conn_id", [None, "", "   ", 0, ["aws_default"]], ids=repr)
    def test_a_recipe_without_a_connection_is_refused(self, conn_id: object) -> None:
        """No connection id would mean the component's own credentials: refused, naming the argument."""
        with pytest.raises(RecipeRefusedError, match="aws_conn_id"):
            require_connection(conn_id, argument="aws_conn_id", canceller="aws_batch_job")

    def test_a_named_connection_is_returned(self) -> None:
        """A non-blank connection id passes unchanged."""
        assert require_connection("aws_prod", argument="aws_conn_id", canceller="aws_batch_job") == "aws_prod"


class TestConfiguredLimits:
    def test_defaults(self) -> None:
        """Without configuration: 30 s per call, 8 cancels at once, give up after an hour."""
        assert CustodianLimits.from_config() == CustodianLimits(30.0, 8, 3600.0)

    def test_configured_values_are_clamped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Out-of-range values become the nearest bound instead of unbounding the custodian."""
        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_CALL_TIMEOUT_SECONDS", "86400")
        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_PARALLEL_CANCELS", "0")
        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_GIVE_UP_SECONDS", "-1")
        assert CustodianLimits.from_config() == CustodianLimits(600.0, 1, 0.0)
        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_CALL_TIMEOUT_SECONDS", "0.01")
        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_PARALLEL_CANCELS", "1000")
        assert CustodianLimits.from_config() == CustodianLimits(1.0, 64, 0.0)

    @pytest.mark.parametrize(
        ("seconds", "clamped"), [(float("nan"), 600.0), (float("inf"), 600.0), (12.5, 12.5), (0.0, 1.0)]
    )
    def test_call_timeout_is_clamped(self, seconds: float, clamped: float) -> None:
        """The deadline of a cloud call stays within 1 to 600 s, whatever the configuration says."""
        assert clamp_call_timeout(seconds) == clamped
