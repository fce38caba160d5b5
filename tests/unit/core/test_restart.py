"""Examples of the pure supervision decisions in ``actors.core.restart`` and the exit reason
helpers."""

from __future__ import annotations

import pytest

from actors.core.restart import (
    affected_children,
    auto_shutdown_due,
    backoff_delay,
    prune,
    record_restart,
    should_restart,
)
from protocols.supervision import KILLED, NORMAL, SHUTDOWN, error_reason, is_normal_exit
from protocols.topology import AutoShutdown, Strategy

# --- record_restart / prune ---------------------------------------------------------------


def test_the_first_restart_is_allowed_with_intensity_one() -> None:
    assert record_restart((), 10.0, intensity=1, period=5.0) == (True, (10.0,))


def test_a_second_restart_within_the_period_exceeds_intensity_one() -> None:
    allowed, history = record_restart((10.0,), 12.0, intensity=1, period=5.0)
    assert not allowed
    assert history == (10.0, 12.0)


def test_a_restart_after_the_period_has_passed_is_allowed_again() -> None:
    allowed, history = record_restart((10.0,), 15.5, intensity=1, period=5.0)
    assert allowed
    assert history == (15.5,)


def test_intensity_zero_never_allows_a_restart() -> None:
    assert record_restart((), 0.0, intensity=0, period=5.0) == (False, (0.0,))
    assert record_restart((), 1e9, intensity=0, period=1e-9)[0] is False


def test_restarts_up_to_intensity_are_allowed_and_the_next_one_is_not() -> None:
    history: tuple[float, ...] = ()
    verdicts = []
    for now in (1.0, 2.0, 3.0, 4.0):
        allowed, history = record_restart(history, now, intensity=3, period=10.0)
        verdicts.append(allowed)
    assert verdicts == [True, True, True, False]
    assert history == (1.0, 2.0, 3.0, 4.0)


def test_restarts_at_the_same_instant_all_count() -> None:
    allowed, history = record_restart((7.0, 7.0), 7.0, intensity=2, period=1.0)
    assert not allowed
    assert history == (7.0, 7.0, 7.0)


def test_record_restart_drops_old_restarts_from_the_history() -> None:
    allowed, history = record_restart((1.0, 2.0, 8.0), 10.0, intensity=2, period=5.0)
    assert allowed
    assert history == (8.0, 10.0)


def test_a_restart_exactly_period_seconds_ago_still_counts_as_in_otp() -> None:
    # supervisor.erl: Threshold = Now - Period, keeps restarts R >= Threshold.
    allowed, history = record_restart((5.0,), 10.0, intensity=1, period=5.0)
    assert history == (5.0, 10.0)
    assert not allowed


def test_prune_keeps_recent_timestamps_and_drops_old_ones_in_order() -> None:
    assert prune((1.0, 4.0, 6.0, 9.0), 10.0, period=5.0) == (6.0, 9.0)


def test_prune_of_an_empty_history_is_empty() -> None:
    assert prune((), 10.0, period=5.0) == ()


# --- should_restart ---------------------------------------------------------------------------

REASONS = {
    "normal": NORMAL,
    "shutdown": SHUTDOWN,
    "shutdown:detail": "shutdown:user asked",
    "killed": KILLED,
    "error": "error:ValueError: boom",
    "custom": "gave up",
}
NORMAL_REASONS = {"normal", "shutdown", "shutdown:detail"}


@pytest.mark.parametrize("reason_name", list(REASONS))
def test_permanent_child_is_restarted_after_any_exit(reason_name: str) -> None:
    assert should_restart("permanent", REASONS[reason_name]) is True


@pytest.mark.parametrize("reason_name", list(REASONS))
def test_temporary_child_is_never_restarted(reason_name: str) -> None:
    assert should_restart("temporary", REASONS[reason_name]) is False


@pytest.mark.parametrize("reason_name", sorted(NORMAL_REASONS))
def test_transient_child_is_not_restarted_after_normal_exit(reason_name: str) -> None:
    assert should_restart("transient", REASONS[reason_name]) is False


@pytest.mark.parametrize("reason_name", sorted(set(REASONS) - NORMAL_REASONS))
def test_transient_child_is_restarted_after_abnormal_exit(reason_name: str) -> None:
    assert should_restart("transient", REASONS[reason_name]) is True


# --- affected_children ----------------------------------------------------------------------

ORDER = ["a", "b", "c", "d"]


@pytest.mark.parametrize("strategy", ["one_for_one", "simple_one_for_one"])
@pytest.mark.parametrize("failed", ORDER)
def test_one_for_one_strategies_restart_only_the_failed_child(
    strategy: Strategy, failed: str
) -> None:
    assert affected_children(strategy, ORDER, failed) == [failed]


@pytest.mark.parametrize("failed", ORDER)
def test_one_for_all_restarts_every_child_in_start_order(failed: str) -> None:
    assert affected_children("one_for_all", ORDER, failed) == ORDER


@pytest.mark.parametrize(
    ("failed", "expected"),
    [("a", ["a", "b", "c", "d"]), ("b", ["b", "c", "d"]), ("c", ["c", "d"]), ("d", ["d"])],
)
def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(
    failed: str, expected: list[str]
) -> None:
    assert affected_children("rest_for_one", ORDER, failed) == expected


def test_affected_children_returns_a_new_list() -> None:
    order = ["a", "b"]
    result = affected_children("one_for_all", order, "a")
    result.append("z")
    assert order == ["a", "b"]


# --- auto_shutdown_due ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "exited_significant", "still_alive", "due"),
    [
        ("never", False, 0, False),
        ("never", True, 0, False),
        ("never", True, 3, False),
        ("any_significant", False, 0, False),
        ("any_significant", True, 0, True),
        ("any_significant", True, 2, True),
        ("all_significant", False, 0, False),
        ("all_significant", True, 0, True),
        ("all_significant", True, 1, False),
        ("all_significant", True, 5, False),
    ],
)
def test_auto_shutdown_is_due_as_in_otp(
    policy: AutoShutdown,
    exited_significant: bool,
    still_alive: int,
    due: bool,
) -> None:
    assert (
        auto_shutdown_due(
            policy, exited_significant=exited_significant, significant_still_alive=still_alive
        )
        is due
    )


# --- backoff_delay ----------------------------------------------------------------------------


def test_backoff_delay_doubles_from_the_base() -> None:
    delays = [backoff_delay(n, base=0.5, cap=100.0) for n in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_delay_stops_at_the_cap() -> None:
    assert backoff_delay(10, base=0.5, cap=3.0) == 3.0
    assert backoff_delay(0, base=5.0, cap=3.0) == 3.0


def test_backoff_delay_is_a_float() -> None:
    assert isinstance(backoff_delay(2, base=1, cap=10), float)  # type: ignore[arg-type]


def test_backoff_delay_stays_at_the_cap_for_a_very_large_attempt() -> None:
    assert backoff_delay(2000, base=0.1, cap=30.0) == 30.0


# --- exit reasons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["normal", "shutdown", "shutdown:x", "shutdown:", "shutdown:a:b"]
)
def test_the_normal_class_of_exit_reasons_is_normal(reason: str) -> None:
    assert is_normal_exit(reason)


@pytest.mark.parametrize(
    "reason",
    [
        "killed",
        "error:ValueError: boom",
        "",
        "Normal",
        "shutdownx",
        "normal:x",
        " shutdown",
        "gave up",
    ],
)
def test_other_exit_reasons_are_not_normal(reason: str) -> None:
    assert not is_normal_exit(reason)


class CustomFailure(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ValueError("boom"), "error:ValueError: boom"),
        (RuntimeError(), "error:RuntimeError: "),
        (KeyError("k"), "error:KeyError: 'k'"),
        (CustomFailure("went: wrong"), "error:CustomFailure: went: wrong"),
        (ZeroDivisionError("division by zero"), "error:ZeroDivisionError: division by zero"),
    ],
)
def test_error_reason_formats_the_exception_type_and_message(
    exc: BaseException, reason: str
) -> None:
    assert error_reason(exc) == reason


def test_an_error_reason_is_abnormal_so_a_transient_child_restarts() -> None:
    reason = error_reason(ValueError("shutdown"))
    assert not is_normal_exit(reason)
    assert should_restart("transient", reason)
