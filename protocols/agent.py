"""The agent protocol: one goal run by an LLM agent actor, its limits, progress and result.

An agent actor (``actors.agents.agent:Agent``) runs one ``RunGoal`` at a time: it calls a
chat-completions model through the ``openai`` client with function tools until the model
answers without a tool call, checking every tool call with the access manager first.

Exit reasons of an agent that fails on the model (the supervisor's decider reads them):
    error:retryable:<Type>: <message>[; retry_after=<seconds>]   429, 5xx, timeouts, connection
    error:fatal:<Type>: <message>                                 401/403, 400 (context length...)
    error:<Type>: <message>                                       anything else (escalates)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols._base import Message

__all__ = [
    "AgentLimits",
    "AgentProgress",
    "AgentResult",
    "CancelGoal",
    "CompletePrompt",
    "ErrorClass",
    "GoalSpec",
    "ProgressKind",
    "PromptCompleted",
    "RunGoal",
    "SetRunTimeLimit",
    "ToolCallRecord",
    "Usage",
]

ErrorClass = Literal["retryable", "fatal", "unknown"]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GoalSpec(_Data):
    """What an agent is asked to do (DESIGN.md section 4: the goal specification)."""

    goal: str
    original_request: str = ""
    constraints: list[str] = Field(default_factory=list)
    acceptance_criteria: list[str] = Field(default_factory=list)
    workspace: str


class AgentLimits(_Data):
    """Budgets of one run; None means unlimited."""

    token_budget: Annotated[int, Field(gt=0)] | None = 50_000
    max_execution_time: Annotated[float, Field(gt=0)] | None = 120.0
    max_steps: Annotated[int, Field(gt=0)] = 20
    tool_calls_per_second: Annotated[float, Field(gt=0)] | None = None
    allow_commands: bool = False


class ToolCallRecord(_Data):
    """One tool call of a run: what was called, how long it took, whether it failed."""

    name: str
    arguments: dict[str, Any]
    duration: float
    error: bool
    result: str = ""


class Usage(_Data):
    """Tokens used by a run, as the model reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class RunGoal(Message):
    """Run one goal; answered with AgentResult (also when the run fails).

    ``progress_to`` names an actor path that receives AgentProgress messages as the run goes.
    """

    kind: Literal["agent.run_goal"] = "agent.run_goal"
    run_id: str
    spec: GoalSpec
    limits: AgentLimits = Field(default_factory=AgentLimits)
    progress_to: str | None = None


ProgressKind = Literal[
    "model_call_started",
    "model_call",
    "tool_call_started",
    "tool_call",
    "tool_denied",
    "tokens",
    "compaction",
    "finished",
]
"""What an AgentProgress reports: a model call started / ended (``model_call``: its tokens,
or its error and error class), a tool call started / ended (``tool_call``, or
``tool_denied``), a context compaction started / ended (``compaction``), the run finished."""


class AgentProgress(Message):
    """Something happened in a run: a model call, a tool call, tokens used.

    ``detail`` of a ``model_call`` has ``input_tokens``, ``output_tokens`` and
    ``total_tokens`` (the run's so far), or ``error`` and ``error_class``; the agent adds
    ``model`` (the model's name) and ``breaker`` (its circuit breaker: closed, open,
    half_open) to every model event.
    """

    kind: Literal["agent.progress"] = "agent.progress"
    run_id: str
    agent: str
    what: ProgressKind
    detail: dict[str, Any] = Field(default_factory=dict)


class AgentResult(Message):
    """How a run ended: output, tool calls, token usage, and the error class if it failed."""

    kind: Literal["agent.result"] = "agent.result"
    run_id: str
    agent: str
    success: bool
    output: str = ""
    steps: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    error_class: ErrorClass | None = None
    files: list[str] = Field(default_factory=list)


class SetRunTimeLimit(Message):
    """Change the maximum execution time of the agent's run ``run_id`` (counted from the run's
    start; None: unlimited); answered Ok, or UnknownRun when the agent is not running it."""

    kind: Literal["agent.set_run_time_limit"] = "agent.set_run_time_limit"
    run_id: str
    max_execution_time: Annotated[float, Field(gt=0)] | None


class CancelGoal(Message):
    """End the agent's run ``run_id`` now as failed (its RunGoal is answered); answered Ok, or
    UnknownRun when the agent is not running it."""

    kind: Literal["agent.cancel_goal"] = "agent.cancel_goal"
    run_id: str
    reason: str = "cancelled"


class CompletePrompt(Message):
    """One model call on the agent's endpoint (no tools): answered with PromptCompleted, or an
    ErrorReply (``ModelError``) naming the classified model error.

    The orchestrator's own model calls (specification, evaluation) go through an agent so they
    never block the orchestrator.
    """

    kind: Literal["agent.complete_prompt"] = "agent.complete_prompt"
    prompt: str
    timeout: Annotated[float, Field(gt=0)] = 60.0


class PromptCompleted(Message):
    """The model's answer to a CompletePrompt."""

    kind: Literal["agent.prompt_completed"] = "agent.prompt_completed"
    text: str
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    """The model that answered (the agent's ``model``)."""
