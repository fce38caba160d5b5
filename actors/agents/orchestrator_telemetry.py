"""What the orchestrator tells its watchers: held progress requests and the model tally.

``RunWatchers``   GetRunProgress requests held (a long poll) until their run has something
                  new: every event is pushed to its followers as it happens
``ModelTally``    model calls, errors by class, tokens in and out per model, and breaker
                  states, counted from the agents' AgentProgress (GetModelStatistics)

Both are plain objects (no Thespian): the orchestrator feeds them and sends what they return.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols._base import Message
from protocols.agent import AgentProgress
from protocols.orchestrator import (
    ModelCounters,
    ModelStatistics,
    PhaseEvent,
    RunOutcome,
    RunProgress,
)

__all__ = ["ModelTally", "RunWatchers"]

Reply = Callable[[Message], None]


@dataclass
class _Watcher:
    since: int
    max_events: int
    reply: Reply
    timer: int


@dataclass
class RunWatchers:
    """Held GetRunProgress requests, per run."""

    _held: dict[str, dict[int, _Watcher]] = field(default_factory=lambda: defaultdict(dict))

    def hold(
        self, run_id: str, watcher: int, *, since: int, max_events: int, reply: Reply, timer: int
    ) -> None:
        """Hold a request until ``release`` (or ``expire``) answers it."""
        self._held[run_id][watcher] = _Watcher(since, max_events, reply, timer)

    def release(
        self, run_id: str, events: list[PhaseEvent], outcome: RunOutcome | None
    ) -> list[int]:
        """Answer every held request of ``run_id`` that has something new.

        Returns:
            The timer tokens of the answered requests (for the caller to cancel).
        """
        held = self._held.get(run_id)
        if not held:
            return []
        timers = []
        for number, watcher in list(held.items()):
            if len(events) <= watcher.since and outcome is None:
                continue
            del held[number]
            timers.append(watcher.timer)
            chunk = events[watcher.since : watcher.since + watcher.max_events]
            watcher.reply(RunProgress(run_id=run_id, events=chunk, outcome=outcome))
        if not held:
            del self._held[run_id]
        return timers

    def expire(self, run_id: str, watcher: int, outcome: RunOutcome | None) -> None:
        """A held request's wait is over with nothing new: answer it with no events."""
        held = self._held.get(run_id, {})
        found = held.pop(watcher, None)
        if found is not None:
            found.reply(RunProgress(run_id=run_id, events=[], outcome=outcome))
        if run_id in self._held and not held:
            del self._held[run_id]

    def count(self) -> int:
        """How many requests are held now."""
        return sum(len(h) for h in self._held.values())


@dataclass
class _Counts:
    calls: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class ModelTally:
    """Counters of model use, fed with every AgentProgress the orchestrator receives."""

    _models: dict[str, _Counts] = field(default_factory=lambda: defaultdict(_Counts))
    _breakers: dict[str, str] = field(default_factory=dict)

    def record(self, progress: AgentProgress) -> None:
        """Count one progress report (only ended model calls and finished runs matter)."""
        detail = progress.detail
        if progress.what == "finished":
            self._breakers.pop(progress.agent, None)
            return
        if progress.what != "model_call":
            return
        error_class = detail.get("error_class")
        self.record_call(
            str(detail.get("model", "unknown")),
            input_tokens=int(detail.get("input_tokens", 0) or 0),
            output_tokens=int(detail.get("output_tokens", 0) or 0),
            error_class=None if error_class is None else str(error_class),
        )
        if "breaker" in detail:
            self._breakers[progress.agent] = str(detail["breaker"])

    def record_call(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        error_class: str | None = None,
    ) -> None:
        """Count one ended model call of ``model`` (``error_class`` when it failed)."""
        counts = self._models[model or "unknown"]
        counts.calls += 1
        if error_class is not None:
            counts.errors[error_class] += 1
        counts.input_tokens += input_tokens
        counts.output_tokens += output_tokens

    def snapshot(self, **breakers: str) -> ModelStatistics:
        """The counters now, plus ``breakers`` (the orchestrator's own, by name)."""
        return ModelStatistics(
            models=[
                ModelCounters(
                    model=name,
                    calls=c.calls,
                    errors=dict(c.errors),
                    input_tokens=c.input_tokens,
                    output_tokens=c.output_tokens,
                )
                for name, c in sorted(self._models.items())
            ],
            breakers={**self._breakers, **breakers},
        )
