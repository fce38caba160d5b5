"""The orchestrator's held progress requests (``RunWatchers``) as a Hypothesis state machine.

A follower's cursor, fed only with what its answers carry, sees every event of the run exactly
once and in order; each held request is answered at most once; once the outcome exists,
nothing stays held.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.agents.orchestrator_telemetry import RunWatchers
from protocols._base import Message
from protocols.agent import GoalSpec
from protocols.orchestrator import PhaseEvent, RunOutcome, RunProgress

OUTCOME = RunOutcome(
    run_id="r", success=True, score=1.0, scores=[1.0], spec=GoalSpec(goal="g", workspace="/w")
)


class Followers(RuleBasedStateMachine):
    """Followers long-polling one run while events (and at last the outcome) happen."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers = RunWatchers()
        self.events: list[PhaseEvent] = []
        self.outcome: RunOutcome | None = None
        self.cursors = [0, 0, 0]
        self.seen: list[list[int]] = [[], [], []]
        self.held: dict[int, int] = {}  # watcher number -> follower
        self.answers: dict[int, int] = {}  # watcher number -> times answered
        self.numbers = iter(range(1, 10**6))
        self.expiring = 0

    def _answer(self, number: int, follower: int, max_events: int) -> Callable[[Message], None]:
        def reply(message: Message) -> None:
            assert isinstance(message, RunProgress)
            self.answers[number] = self.answers.get(number, 0) + 1
            assert len(message.events) <= max_events
            # Empty only when its wait is over, or with the outcome.
            assert message.events or number == self.expiring or message.outcome is not None
            self.seen[follower] += [e.n for e in message.events]
            self.cursors[follower] += len(message.events)
            self.held.pop(number, None)

        return reply

    @rule(follower=st.integers(0, 2), max_events=st.integers(1, 4))
    def poll(self, follower: int, max_events: int) -> None:
        if follower in self.held.values():
            return  # one request at a time per follower, as RunEvents does
        number = next(self.numbers)
        reply = self._answer(number, follower, max_events)
        since = self.cursors[follower]
        if len(self.events) > since or self.outcome is not None:  # answered at once
            chunk = self.events[since : since + max_events]
            reply(RunProgress(run_id="r", events=chunk, outcome=self.outcome))
            return
        self.held[number] = follower
        self.watchers.hold(
            "r", number, since=since, max_events=max_events, reply=reply, timer=number
        )

    @precondition(lambda self: self.outcome is None)
    @rule()
    def event(self) -> None:
        self.events.append(
            PhaseEvent(n=len(self.events) + 1, time=0.0, phase="run", what="progress")
        )
        self.watchers.release("r", self.events, None)

    @precondition(lambda self: self.outcome is None)
    @rule()
    def finish(self) -> None:
        self.outcome = OUTCOME
        self.events.append(
            PhaseEvent(n=len(self.events) + 1, time=0.0, phase="run", what="finished")
        )
        self.watchers.release("r", self.events, self.outcome)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.held)))
        self.expiring = number
        self.watchers.expire("r", number, self.outcome)
        self.expiring = 0

    @invariant()
    def each_event_once_in_order(self) -> None:
        for seen in self.seen:
            assert seen == list(range(1, len(seen) + 1))

    @invariant()
    def answered_at_most_once_and_nothing_held_after_the_outcome(self) -> None:
        assert all(times == 1 for times in self.answers.values())
        assert self.watchers.count() == len(self.held)
        if self.outcome is not None:
            assert not self.held


TestFollowers = Followers.TestCase
