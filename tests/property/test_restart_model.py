"""The pure supervision decisions against plain models of OTP's rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.core.restart import (
    affected_children,
    auto_shutdown_due,
    backoff_delay,
    prune,
    record_restart,
    should_restart,
)
from protocols.supervision import error_reason, is_normal_exit
from protocols.topology import AutoShutdown, RestartType, Strategy
from tests.strategies import (
    AUTO_SHUTDOWNS,
    RESTART_TYPES,
    STRATEGIES,
    intensities,
    periods,
    restart_histories,
    restart_times,
    unique_ids,
)


class OtpRestartWindow:
    """supervisor.erl's add_restart/1, transcribed.

    ``Threshold = Now - Period``; the restarts ``R >= Threshold`` are kept, ``Now`` is added,
    and the restart is allowed while their number is ``=< Intensity``.
    """

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self.restarts: list[float] = []

    def add(self, now: float) -> bool:
        threshold = now - self.period
        self.restarts = [r for r in self.restarts if r >= threshold] + [now]
        return len(self.restarts) <= self.intensity


@given(restart_times(), intensities, periods)
def test_record_restart_agrees_with_otps_restart_window(
    times: list[float], intensity: int, period: float
) -> None:
    model = OtpRestartWindow(intensity, period)
    history: tuple[float, ...] = ()
    for now in times:
        allowed, history = record_restart(history, now, intensity=intensity, period=period)
        assert allowed == model.add(now), (now, history, model.restarts)
        assert list(history) == model.restarts


@given(restart_times(), periods)
def test_intensity_zero_never_allows_a_restart(times: list[float], period: float) -> None:
    history: tuple[float, ...] = ()
    for now in times:
        allowed, history = record_restart(history, now, intensity=0, period=period)
        assert not allowed


@given(restart_histories(), st.integers(0, 40).map(lambda n: n / 4), intensities, periods)
def test_record_restart_returns_the_pruned_history_ending_with_now(
    history: tuple[float, ...], later: float, intensity: int, period: float
) -> None:
    now = (history[-1] if history else 0.0) + later
    allowed, kept = record_restart(history, now, intensity=intensity, period=period)
    assert kept == (*prune(history, now, period=period), now)
    assert allowed == (len(kept) <= intensity)


@given(restart_histories(), st.integers(0, 40).map(lambda n: n / 4), periods)
def test_prune_never_keeps_a_timestamp_older_than_period(
    history: tuple[float, ...], later: float, period: float
) -> None:
    now = (history[-1] if history else 0.0) + later
    assert all(now - t <= period for t in prune(history, now, period=period))


@given(restart_histories(), st.integers(0, 40).map(lambda n: n / 4), periods)
def test_prune_keeps_every_timestamp_younger_than_period_in_order(
    history: tuple[float, ...], later: float, period: float
) -> None:
    now = (history[-1] if history else 0.0) + later
    kept = prune(history, now, period=period)
    assert kept == tuple(t for t in kept if t in history)
    assert [t for t in history if now - t < period] == [t for t in kept if now - t < period]
    assert list(kept) == sorted(kept)


@given(restart_histories(), periods)
def test_prune_is_idempotent(history: tuple[float, ...], period: float) -> None:
    now = history[-1] if history else 0.0
    once = prune(history, now, period=period)
    assert prune(once, now, period=period) == once


@given(st.sampled_from(RESTART_TYPES), st.text(max_size=20))
def test_should_restart_follows_the_restart_type_and_the_exit_class(
    restart: RestartType, reason: str
) -> None:
    expected = {
        "permanent": True,
        "transient": not is_normal_exit(reason),
        "temporary": False,
    }[restart]
    assert should_restart(restart, reason) is expected


@given(st.text(max_size=20))
def test_is_normal_exit_accepts_exactly_normal_shutdown_and_shutdown_with_detail(
    reason: str,
) -> None:
    expected = reason in ("normal", "shutdown") or reason.startswith("shutdown:")
    assert is_normal_exit(reason) is expected
    assert is_normal_exit("shutdown:" + reason)


@given(st.text(max_size=30))
def test_error_reasons_are_never_normal_exits(message: str) -> None:
    reason = error_reason(RuntimeError(message))
    assert reason == f"error:RuntimeError: {message}"
    assert not is_normal_exit(reason)


@given(st.sampled_from(STRATEGIES), unique_ids(), st.data())
def test_affected_children_is_a_run_of_the_start_order_containing_the_failed_child(
    strategy: Strategy, order: list[str], data: st.DataObject
) -> None:
    failed = data.draw(st.sampled_from(order), label="failed")
    affected = affected_children(strategy, order, failed)
    index = order.index(failed)
    expected = {
        "one_for_one": [failed],
        "simple_one_for_one": [failed],
        "one_for_all": order,
        "rest_for_one": order[index:],
    }[strategy]
    assert affected == expected
    assert failed in affected
    start = order.index(affected[0])
    assert affected == order[start : start + len(affected)]


@given(
    st.sampled_from(AUTO_SHUTDOWNS),
    st.booleans(),
    st.integers(0, 10),
)
def test_auto_shutdown_is_due_only_for_significant_exits_under_a_policy(
    policy: AutoShutdown,
    exited_significant: bool,
    still_alive: int,
) -> None:
    due = auto_shutdown_due(
        policy, exited_significant=exited_significant, significant_still_alive=still_alive
    )
    expected = exited_significant and (
        policy == "any_significant" or (policy == "all_significant" and still_alive == 0)
    )
    assert due is expected


bases = st.floats(min_value=0.001, max_value=60.0)
caps = st.floats(min_value=0.0, max_value=3600.0)
attempts = st.integers(0, 5000)


@given(attempts, bases, caps)
def test_backoff_delay_never_exceeds_the_cap(attempt: int, base: float, cap: float) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap)
    assert 0.0 <= delay <= cap


@given(attempts, attempts, bases, caps)
def test_backoff_delay_does_not_decrease_with_the_attempt(
    first: int, second: int, base: float, cap: float
) -> None:
    low, high = sorted((first, second))
    assert backoff_delay(low, base=base, cap=cap) <= backoff_delay(high, base=base, cap=cap)
