"""The orchestrator protocol: run a goal end to end, watch its progress, get its outcome.

Phases of a run: [interview ->] specification -> execution -> evaluation [-> evolution ->
execution -> evaluation ...]; each phase start and end is a ``PhaseEvent``.
``RunGoalRequest`` is answered with ``RunAccepted``; progress is read with ``GetRunProgress``
(events after a cursor; with ``wait`` the answer is held until there is one, so a follower
gets each event as it happens: ``Runtime.run_events``) and the outcome waited for with
``WaitRun``.
``GetModelStatistics`` answers the model calls, tokens and breaker states of its agents;
``CancelRun`` stops a run (its agents, its phases, its subtasks and their model calls) and ends
it ``stopped``.

Maximum execution time (of each agent run, counted from that agent's start)
    the deployment default   the orchestrator's ``max_execution_time`` arg (60 s), changed live
                             by ``SetMaxExecutionTime`` without ``run_id``; ``0`` is unlimited
    a per-run override       ``RunGoalRequest.max_execution_time``, or ``SetMaxExecutionTime``
                             with ``run_id``; a run without one follows the default as it changes

With ``interview``, the model first rates the request: a message that is not a task gets a
``ChatReply`` (no run); an ambiguous one gets ``ClarifyingQuestions``, answered with
``AnswerQuestions`` in the same ``session_id`` (again and again, until the ambiguity is at most
``clarity_threshold`` or ``max_interview_rounds`` rounds were asked); a clear one is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols._base import Message
from protocols.agent import AgentResult, GoalSpec
from protocols.scheduler import Priority

__all__ = [
    "AnswerQuestions",
    "CancelRun",
    "ChatReply",
    "ClarifyingQuestions",
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
    "Subtask",
    "WaitRun",
]

Phase = Literal[
    "interview",
    "specification",
    "execution",
    "evaluation",
    "evolution",
    "delegation",
    "cleanup",
    "run",
]


class Subtask(BaseModel):
    """One part of a goal run in parallel with the others.

    ``goal`` is what this part does; ``request`` its share of the user's request (default: its
    goal); ``capability`` the skill tag its delegate is found by (default: the run's);
    ``criteria`` its acceptance criteria (default: its goal). A plain string is a goal.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal: Annotated[str, Field(min_length=1)]
    request: str = ""
    capability: str | None = None
    criteria: list[str] = Field(default_factory=list)


class RunGoalRequest(Message):
    """Run ``goal`` end to end.

    ``criteria`` are the acceptance criteria (derived from the goal when empty); a goal with
    at least ``split_at`` criteria, or explicit ``subtasks``, runs its subtasks in parallel on
    agents found by capability in the registry (falling back to running them directly); a
    split by criteria gives each subtask the clause of the goal its criterion names.
    ``evolutions`` bounds the re-runs with feedback; the run stops early at ``threshold``.
    ``max_execution_time`` overrides the deployment default for this run (``0``: unlimited;
    None: follow the default). ``priority`` is the priority of the run's scheduler tasks.
    ``interview`` makes the model rate the request first (see the module doc); a request rated
    complex (``complexity`` >= 0.5) then gets a model-made specification unless
    ``specify_with_model`` says otherwise.
    """

    kind: Literal["orchestrator.run_goal"] = "orchestrator.run_goal"
    goal: str
    owner: str = "cli"
    workspace: str | None = None
    criteria: list[str] = Field(default_factory=list)
    subtasks: list[Subtask] = Field(default_factory=list)
    capability: str = "general"
    split_at: Annotated[int, Field(ge=2)] = 4
    evolutions: Annotated[int, Field(ge=0)] = 2
    threshold: Annotated[float, Field(ge=0, le=1)] = 1.0
    max_execution_time: Annotated[float, Field(ge=0)] | None = None
    token_budget: Annotated[int, Field(gt=0)] = 50_000
    specify_with_model: bool | None = None
    interview: bool = False
    clarity_threshold: Annotated[float, Field(ge=0, le=1)] = 0.2
    max_interview_rounds: Annotated[int, Field(ge=1, le=10)] = 3
    priority: Priority = "normal"

    @field_validator("subtasks", mode="before")
    @classmethod
    def _plain_goals(cls, value: object) -> object:
        """A subtask given as a string is its goal."""
        if isinstance(value, list):
            return [{"goal": v} if isinstance(v, str) else v for v in value]
        return value


class RunAccepted(Message):
    """The run started; follow it with GetRunProgress / WaitRun."""

    kind: Literal["orchestrator.run_accepted"] = "orchestrator.run_accepted"
    run_id: str
    workspace: str
    session_id: str | None = None
    """The interview's session, when the request was interviewed."""
    goal: str | None = None
    """The goal the run works on, when the interview restated it."""


class ClarifyingQuestions(Message):
    """The request is too ambiguous to specify: answer these in ``session_id``."""

    kind: Literal["orchestrator.clarifying_questions"] = "orchestrator.clarifying_questions"
    session_id: str
    questions: list[str]
    ambiguity: float
    complexity: float
    round: int


class AnswerQuestions(Message):
    """The caller's answers to the last ClarifyingQuestions of ``session_id``, in order."""

    kind: Literal["orchestrator.answer_questions"] = "orchestrator.answer_questions"
    session_id: str
    answers: list[str]
    owner: str = "cli"


class ChatReply(Message):
    """The request is not a task: the model's direct reply (no run was started)."""

    kind: Literal["orchestrator.chat_reply"] = "orchestrator.chat_reply"
    session_id: str
    reply: str


class PhaseEvent(Message):
    """One thing that happened in a run, in order (``n`` counts from 1 per run)."""

    kind: Literal["orchestrator.phase_event"] = "orchestrator.phase_event"
    n: int
    time: float
    phase: Phase
    what: Literal["started", "finished", "progress"]
    detail: dict[str, Any] = Field(default_factory=dict)


class RunOutcome(Message):
    """How a run ended: the best result, its score, and every attempt's score.

    ``status`` is ``completed`` (it succeeded), ``failed``, or ``stopped`` (CancelRun, or the
    run manager's StopRun); a result that arrives after the stop is kept in ``result``.

    ``unmet`` and ``unverified`` are the best attempt's criteria that were not met, and those
    nothing could check (never counted as met); ``error`` says why a run did not succeed.
    """

    kind: Literal["orchestrator.run_outcome"] = "orchestrator.run_outcome"
    run_id: str
    status: Literal["completed", "failed", "stopped"] = "failed"
    success: bool
    score: float
    scores: list[float]
    spec: GoalSpec
    result: AgentResult | None = None
    subtask_results: list[AgentResult] = Field(default_factory=list)
    unmet: list[str] = Field(default_factory=list)
    unverified: list[str] = Field(default_factory=list)
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
    """Change the maximum execution time: of run ``run_id`` (counted from its current agent's
    start; answered RunProgress), or with no ``run_id`` the deployment default (every run
    without an override follows it at once; answered Ok). ``0`` is unlimited."""

    kind: Literal["orchestrator.set_max_execution_time"] = "orchestrator.set_max_execution_time"
    run_id: str | None = None
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CancelRun(Message):
    """Stop a run: its agents, its phases, its subtasks and their model calls; the run ends
    ``stopped``. Answered with its RunOutcome once it has stopped (at once if it had ended)."""

    kind: Literal["orchestrator.cancel_run"] = "orchestrator.cancel_run"
    run_id: str
    reason: str = "stopped by request"


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


class _RunStopRequested(Message):
    """Orchestrator -> itself: stop a run the run manager has stopped."""

    kind: Literal["_orchestrator.run_stop_requested"] = "_orchestrator.run_stop_requested"
    run_id: str
    reason: str


class _RunStuck(Message):
    """Orchestrator -> itself: a killed agent's run has had its cleanup time: whatever it still
    waits for is given up."""

    kind: Literal["_orchestrator.run_stuck"] = "_orchestrator.run_stuck"
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
