"""A child's own restart limit (restart_limit) against a plain model of its rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.core.restart import record_child_restart, reset_on_success
from protocols.topology import RestartLimit

# A run of a child: at each (increasing) time it either crashes or reports a success.
steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=5.0), st.sampled_from(["crash", "success"])),
    max_size=40,
)
limits = st.builds(
    RestartLimit,
    max_restarts=st.integers(min_value=0, max_value=6),
    within=st.none() | st.floats(min_value=0.1, max_value=10.0),
    reset_on=st.sampled_from(["success", "never"]),
    on_limit=st.sampled_from(["stop", "escalate"]),
)


@given(limit=limits, run=steps)
def test_a_restart_is_allowed_exactly_while_the_count_since_the_last_reset_is_within_the_limit(
    limit: RestartLimit, run: list[tuple[float, str]]
) -> None:
    history: tuple[float, ...] = ()
    crashes: list[float] = []  # the model: crash times since the last reset
    now = 0.0
    for gap, what in run:
        now += gap
        if what == "success":
            history = reset_on_success(history, limit)
            if limit.reset_on == "success":
                crashes = []
            continue
        verdict, history = record_child_restart(history, now, limit=limit)
        crashes.append(now)
        counted = [t for t in crashes if limit.within is None or t >= now - limit.within]
        expected = "restart" if len(counted) <= limit.max_restarts else limit.on_limit

        assert expected == verdict
        if verdict != "restart":
            return  # the child is down for good (or its supervisor gave up)


@given(limit=limits, times=st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=20))
def test_the_history_never_keeps_restarts_older_than_within(
    limit: RestartLimit, times: list[float]
) -> None:
    history: tuple[float, ...] = ()
    for now in sorted(times):
        _verdict, history = record_child_restart(history, now, limit=limit)

        assert now == history[-1]
        if limit.within is not None:
            assert all(t >= now - limit.within for t in history)


def test_a_success_clears_the_count_so_the_child_may_fail_max_restarts_times_again() -> None:
    limit = RestartLimit(max_restarts=2)
    history: tuple[float, ...] = ()
    verdicts = []
    for now in (1.0, 2.0):
        verdict, history = record_child_restart(history, now, limit=limit)
        verdicts.append(verdict)
    history = reset_on_success(history, limit)
    for now in (3.0, 4.0, 5.0):
        verdict, history = record_child_restart(history, now, limit=limit)
        verdicts.append(verdict)

    assert ["restart", "restart", "restart", "restart", "stop"] == verdicts


def test_without_reset_on_success_a_success_changes_nothing() -> None:
    limit = RestartLimit(max_restarts=1, reset_on="never", on_limit="escalate")
    _verdict, history = record_child_restart((), 1.0, limit=limit)
    history = reset_on_success(history, limit)
    verdict, _history = record_child_restart(history, 2.0, limit=limit)

    assert "escalate" == verdict
