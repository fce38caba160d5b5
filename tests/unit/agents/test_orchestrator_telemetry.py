"""The orchestrator's watchers (held progress requests) and model tally, without Thespian."""

from __future__ import annotations

from actors.agents.orchestrator_telemetry import ModelTally, RunWatchers
from protocols._base import Message
from protocols.agent import AgentProgress, GoalSpec
from protocols.orchestrator import PhaseEvent, RunOutcome, RunProgress


def _event(n: int) -> PhaseEvent:
    return PhaseEvent(n=n, time=0.0, phase="execution", what="progress", detail={"n": n})


def _outcome() -> RunOutcome:
    return RunOutcome(
        run_id="r", success=True, score=1.0, scores=[1.0], spec=GoalSpec(goal="g", workspace="/w")
    )


def test_a_held_request_is_answered_with_what_is_new_once_there_is_something() -> None:
    watchers, answers = RunWatchers(), list[Message]()
    watchers.hold("r", 1, since=2, max_events=10, reply=answers.append, timer=7)
    events = [_event(1), _event(2)]

    nothing_new = watchers.release("r", events, None)
    events.append(_event(3))
    timers = watchers.release("r", events, None)

    assert [] == nothing_new
    assert [7] == timers
    assert [RunProgress(run_id="r", events=[_event(3)], outcome=None)] == answers
    assert 0 == watchers.count()


def test_the_outcome_releases_every_held_request_and_max_events_bounds_each_answer() -> None:
    watchers, first, second = RunWatchers(), list[Message](), list[Message]()
    watchers.hold("r", 1, since=0, max_events=2, reply=first.append, timer=1)
    watchers.hold("r", 2, since=5, max_events=2, reply=second.append, timer=2)
    events = [_event(n) for n in range(1, 6)]

    timers = watchers.release("r", events, _outcome())

    assert [1, 2] == sorted(timers)
    assert [RunProgress(run_id="r", events=events[:2], outcome=_outcome())] == first
    assert [RunProgress(run_id="r", events=[], outcome=_outcome())] == second


def test_an_expired_request_gets_no_events_and_only_once() -> None:
    watchers, answers = RunWatchers(), list[Message]()
    watchers.hold("r", 1, since=0, max_events=10, reply=answers.append, timer=1)
    watchers.hold("other", 2, since=0, max_events=10, reply=answers.append, timer=2)

    watchers.expire("r", 1, None)
    watchers.expire("r", 1, None)

    assert [RunProgress(run_id="r", events=[], outcome=None)] == answers
    assert 1 == watchers.count()


def _call(agent: str, model: str, **detail: object) -> AgentProgress:
    return AgentProgress(
        run_id="r", agent=agent, what="model_call", detail={"model": model, **detail}
    )


def test_the_tally_counts_calls_errors_by_class_and_tokens_per_model() -> None:
    tally = ModelTally()
    for progress in [
        _call("a", "m1", input_tokens=10, output_tokens=3, breaker="closed"),
        _call("a", "m1", input_tokens=5, output_tokens=2, breaker="closed"),
        _call("b", "m1", error="429", error_class="retryable", breaker="closed"),
        _call("b", "m2", error="401", error_class="fatal", breaker="open"),
        AgentProgress(run_id="r", agent="a", what="model_call_started", detail={"model": "m1"}),
        AgentProgress(run_id="r", agent="a", what="tool_call", detail={"name": "x"}),
    ]:
        tally.record(progress)

    stats = tally.snapshot(delegation="closed")

    [m1, m2] = stats.models
    assert ("m1", 3, {"retryable": 1}, 15, 5) == (
        m1.model,
        m1.calls,
        m1.errors,
        m1.input_tokens,
        m1.output_tokens,
    )
    assert ("m2", 1, {"fatal": 1}) == (m2.model, m2.calls, m2.errors)
    assert {"a": "closed", "b": "open", "delegation": "closed"} == stats.breakers


def test_a_finished_agent_leaves_the_breaker_table() -> None:
    tally = ModelTally()
    tally.record(_call("a", "m", breaker="open"))
    tally.record(AgentProgress(run_id="r", agent="a", what="finished"))

    assert {} == tally.snapshot().breakers
