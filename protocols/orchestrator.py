"""The orchestrator protocol: run a goal end to end, watch its progress, get its outcome.

Phases of a run: specification -> execution -> evaluation [-> evolution -> execution ->
evaluation ...]; each phase start and end is a ``PhaseEvent``. ``RunGoalRequest`` is answered
at once with ``RunAccepted``; progress is read with ``GetRunProgress`` (events after a
cursor; with ``wait`` the answer is held until there is one, so a follower gets each event
as it happens: ``Runtime.run_events``) and the outcome waited for with ``WaitRun``.
``GetModelStatistics`` answers the model calls, tokens and breaker states of its agents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols._base import Message
from protocols.agent import AgentResult, GoalSpec

__all__ = [
    "GetModelStatistics",
    "GetRunProgress",
    "ModelCounters",
    "ModelStatistics",
    "Phase",
    "PhaseEvent",
    "RunAccepted",
    "RunGoalRequest",
    "RunOutcome",
    "RunProgress",
    "SetMaxExecutionTime",
    "WaitRun",
]

Phase = Literal[
    "specification", "execution", "evaluation", "evolution", "delegation", "cleanup", "run"
]


class RunGoalRequest(Message):
    """Run ``goal`` end to end.

    ``criteria`` are the acceptance criteria (derived from the goal when empty); a goal with
    at least ``split_at`` criteria, or explicit ``subtasks``, runs its subtasks in parallel on
    agents found by ``capability`` in the registry (falling back to running them directly).
    ``evolutions`` bounds the re-runs with feedback; the run stops early at ``threshold``.
    """

    kind: Literal["orchestrator.run_goal"] = "orchestrator.run_goal"
    goal: str
    owner: str = "cli"
    workspace: str | None = None
    criteria: list[str] = Field(default_factory=list)
    subtasks: list[str] = Field(default_factory=list)
    capability: str = "general"
    split_at: Annotated[int, Field(ge=2)] = 4
    evolutions: Annotated[int, Field(ge=0)] = 2
    threshold: Annotated[float, Field(ge=0, le=1)] = 1.0
    max_execution_time: Annotated[float, Field(gt=0)] = 60.0
    token_budget: Annotated[int, Field(gt=0)] = 50_000
    specify_with_model: bool | None = None


class RunAccepted(Message):
    """The run started; follow it with GetRunProgress / WaitRun."""

    kind: Literal["orchestrator.run_accepted"] = "orchestrator.run_accepted"
    run_id: str
    workspace: str


class PhaseEvent(Message):
    """One thing that happened in a run, in order (``n`` counts from 1 per run)."""

    kind: Literal["orchestrator.phase_event"] = "orchestrator.phase_event"
    n: int
    time: float
    phase: Phase
    what: Literal["started", "finished", "progress"]
    detail: dict[str, Any] = Field(default_factory=dict)


class RunOutcome(Message):
    """How a run ended: the best result, its score, and every attempt's score."""

    kind: Literal["orchestrator.run_outcome"] = "orchestrator.run_outcome"
    run_id: str
    success: bool
    score: float
    scores: list[float]
    spec: GoalSpec
    result: AgentResult | None = None
    subtask_results: list[AgentResult] = Field(default_factory=list)
    error: str | None = None


class GetRunProgress(Message):
    """Ask for a run's events after ``since`` (and its outcome once it has one).

    With ``wait`` > 0 and nothing new yet, the answer is held until the next event (or the
    outcome) or for ``wait`` seconds (then with no events): a long poll, so that a follower
    gets every event as it happens without polling. At most ``max_events`` come at once.
    """

    kind: Literal["orchestrator.get_run_progress"] = "orchestrator.get_run_progress"
    run_id: str
    since: Annotated[int, Field(ge=0)] = 0
    wait: Annotated[float, Field(ge=0, le=300)] = 0.0
    max_events: Annotated[int, Field(gt=0)] = 1000


class RunProgress(Message):
    """A run's events after the cursor, and its outcome when it has ended."""

    kind: Literal["orchestrator.run_progress"] = "orchestrator.run_progress"
    run_id: str
    events: list[PhaseEvent]
    outcome: RunOutcome | None = None


class WaitRun(Message):
    """Answer with the run's RunOutcome once it has one (or RunProgress after ``timeout``)."""

    kind: Literal["orchestrator.wait_run"] = "orchestrator.wait_run"
    run_id: str
    timeout: Annotated[float, Field(gt=0, le=3600)] = 300.0


class SetMaxExecutionTime(Message):
    """Change a running run's maximum execution time (from its current agent's start)."""

    kind: Literal["orchestrator.set_max_execution_time"] = "orchestrator.set_max_execution_time"
    run_id: str
    seconds: Annotated[float, Field(gt=0)]


class GetModelStatistics(Message):
    """Ask the orchestrator for the model use of its runs' agents (answered ModelStatistics)."""

    kind: Literal["orchestrator.get_model_statistics"] = "orchestrator.get_model_statistics"


class ModelCounters(BaseModel):
    """One model's use since the orchestrator started: calls, errors by class, tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    calls: int = 0
    errors: dict[str, int] = Field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0


class ModelStatistics(Message):
    """The reply to GetModelStatistics.

    ``models``: counters per model name (from the agents' progress; counters restart from
    zero when the orchestrator does). ``breakers``: the circuit breaker state (closed, open,
    half_open) of each agent running now, as its last model call left it, and the
    orchestrator's own delegation breaker (``delegation``).
    """

    kind: Literal["orchestrator.model_statistics"] = "orchestrator.model_statistics"
    models: list[ModelCounters] = Field(default_factory=list)
    breakers: dict[str, str] = Field(default_factory=dict)


class _RunTimer(Message):
    """Orchestrator -> itself: a run's agent reached its maximum execution time."""

    kind: Literal["_orchestrator.run_timer"] = "_orchestrator.run_timer"
    run_id: str
    generation: int


class _WaitExpired(Message):
    """Orchestrator -> itself: a WaitRun reached its timeout."""

    kind: Literal["_orchestrator.wait_expired"] = "_orchestrator.wait_expired"
    run_id: str
    waiter: int


class _WatchExpired(Message):
    """Orchestrator -> itself: a held GetRunProgress reached its ``wait``."""

    kind: Literal["_orchestrator.watch_expired"] = "_orchestrator.watch_expired"
    run_id: str
    watcher: int
