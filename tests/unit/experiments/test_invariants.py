"""The invariants, as pure checks over recorded runs: each passes on a good record and fails,
with a counterexample, on a bad one."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.experiments import invariants as inv
from protocols.ledger import LEDGER_EVENTS
from protocols.supervision import SupervisionEvent


def _events(*rows: tuple[float, str, str, str | None]) -> list[SupervisionEvent]:
    return [
        SupervisionEvent(seq=n, time=t, supervisor=sup, child_id=child, event=event)  # type: ignore[arg-type]
        for n, (t, event, sup, child) in enumerate(rows, start=1)
    ]


def _crash_restart(
    t: float, sup: str = "root", child: str = "w"
) -> list[tuple[float, str, str, str | None]]:
    return [(t, "child_exited", sup, child), (t + 0.01, "child_restarted", sup, child)]


def _ledger(**total: int) -> dict[str, Any]:
    counts = dict.fromkeys(LEDGER_EVENTS, 0)
    counts.update(total)
    return {"total": counts, "by_kind": {"k": dict(counts)}, "unreported": 0}


def test_no_lost_messages_balances_with_faults_and_names_the_gap() -> None:
    assert inv.no_lost_messages(_ledger(sent=10, handled=7, dropped_by_fault=3)).ok
    bad = inv.no_lost_messages(_ledger(sent=10, handled=7, dropped_by_fault=2))
    assert not bad.ok
    assert "-1" not in bad.detail and "+1" in bad.detail
    assert "k" in bad.counterexample["unbalanced_kinds"]


def test_tree_alive_fails_when_the_root_gave_up() -> None:
    assert inv.tree_alive(_events(*_crash_restart(1.0)), None, "root").ok
    gave_up = _events(
        (1.0, "intensity_exceeded", "root", "w"), (1.1, "supervisor_shutdown", "root", None)
    )
    verdict = inv.tree_alive(gave_up, "shutdown", "root")
    assert not verdict.ok
    assert "intensity_exceeded" == verdict.counterexample["event"]


def test_restart_limits_accepts_restarts_within_intensity_then_a_timely_give_up() -> None:
    rows = (
        _crash_restart(1.0)
        + _crash_restart(2.0)
        + [
            (3.0, "child_exited", "root", "w"),
            (3.0, "intensity_exceeded", "root", "w"),
            (3.1, "supervisor_shutdown", "root", None),
        ]
    )
    assert inv.restart_limits(_events(*rows), {"root": (2, 5.0)}).ok


def test_restart_limits_catches_too_many_restarts_without_giving_up() -> None:
    rows = _crash_restart(1.0) + _crash_restart(2.0) + _crash_restart(3.0)
    verdict = inv.restart_limits(_events(*rows), {"root": (2, 5.0)})
    assert not verdict.ok
    assert "did not give up" in verdict.detail


def test_restart_limits_catches_an_early_give_up() -> None:
    rows = [
        *_crash_restart(1.0),
        (2.0, "child_exited", "root", "w"),
        (2.0, "intensity_exceeded", "root", "w"),
    ]
    verdict = inv.restart_limits(_events(*rows), {"root": (3, 5.0)})
    assert not verdict.ok
    assert "too early" in verdict.detail


@given(gaps=st.lists(st.floats(0.3, 3.0), min_size=1, max_size=12), intensity=st.integers(1, 4))
def test_restart_limits_agrees_with_a_supervisor_that_follows_the_rule(
    gaps: list[float], intensity: int
) -> None:
    """Simulate OTP's rule (at most ``intensity`` restarts in ``period``) and check the record
    it leaves passes."""
    period = 2.0
    rows: list[tuple[float, str, str, str | None]] = []
    history: list[float] = []
    t = 0.0
    for gap in gaps:
        t += gap
        history = [h for h in history if h >= t - period] + [t]
        rows.append((t, "child_exited", "root", "w"))
        if len(history) > intensity:
            rows.append((t, "intensity_exceeded", "root", "w"))
            rows.append((t, "supervisor_shutdown", "root", None))
            break
        rows.append((t, "child_restarted", "root", "w"))
    assert inv.restart_limits(_events(*rows), {"root": (intensity, period)}).ok


def test_single_instance_catches_a_second_start_without_an_exit() -> None:
    good = _events((0, "child_started", "root", "w"), *_crash_restart(1.0))
    assert inv.single_instance(good).ok
    bad = _events((0, "child_started", "root", "w"), (1.0, "child_started", "root", "w"))
    verdict = inv.single_instance(bad)
    assert not verdict.ok
    assert "root/w" in verdict.detail


def _op(op: int, kind: str, latency: float | None = None, timeout: float = 1.0) -> dict[str, Any]:
    return {
        "op": op,
        "type": kind,
        "f": "ask",
        "value": {"to": "root/w"},
        "timeout": timeout,
        "latency": latency,
    }


def test_fail_fast_catches_an_operation_past_its_timeout_and_one_that_never_ended() -> None:
    assert inv.fail_fast([_op(1, "invoke"), _op(1, "fail", 1.2)]).ok
    late = inv.fail_fast([_op(1, "invoke"), _op(1, "ok", 3.0)])
    assert not late.ok
    assert 3.0 == late.counterexample["end"]["latency"]
    assert not inv.fail_fast([_op(1, "invoke")]).ok


def test_tasks_terminal_names_an_open_task() -> None:
    done = [{"id": "a", "state": "completed"}, {"id": "b", "state": "timed_out"}]
    assert inv.tasks_terminal(done).ok
    verdict = inv.tasks_terminal([*done, {"id": "c", "state": "running"}])
    assert not verdict.ok
    assert "c" == verdict.counterexample["id"]


def test_no_orphans_and_liveness() -> None:
    assert inv.no_orphans([], 3).ok
    assert not inv.no_orphans([{"pid": 42, "name": "python", "when": "after the run"}], 3).ok
    assert inv.liveness_after_heal({"root/a": 0.01, "root/b": 0.2}, 1.0).ok
    verdict = inv.liveness_after_heal({"root/a": 0.01, "root/b": None}, 1.0)
    assert not verdict.ok
    assert {"root/b": None} == verdict.counterexample


def _request(at: float, status: int, conversation: str, took: float = 0.01) -> dict[str, Any]:
    return {"at": at, "finished_at": at + took, "status": status, "conversation": conversation}


def test_llm_budget_wants_each_retry_after_its_retry_after_in_its_conversation() -> None:
    patient = [_request(0.0, 429, "a"), _request(0.2, 200, "b"), _request(0.6, 200, "a")]
    assert inv.llm_budget(patient, 0.5).ok
    eager = [_request(0.0, 429, "a"), _request(0.1, 200, "a")]
    verdict = inv.llm_budget(eager, 0.5)
    assert not verdict.ok
    assert 0.1 == verdict.counterexample["next"]["at"]
