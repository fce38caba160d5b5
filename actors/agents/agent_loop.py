"""One agent run, pure: the conversation as a state machine, its budgets, its rate limiter, the
model's circuit breaker and the classification of model errors (no Thespian, no I/O).

The run (``AgentRun``) is driven by inputs and answers each with a list of effects for its
host (``actors.agents.agent.Agent``) to carry out::

    start()                        -> CallModel | Finish
    model_replied(turn)            -> Progress, then CheckTool (first tool call) | CallModel |
                                      Finish (a final answer, or a budget exceeded); a final
                                      answer fails when the model refused (its ``refusal``)
                                      or when the goal asks for files
                                      (``protocols.goals.files_asked``) and none was written
    model_failed(exc)              -> Progress, Wait (an in-place retry) | CallModel (a
                                      compaction after a context-length error) | Finish
    access_decided(allowed, ...)   -> ExecuteTool | Progress, Audit, then the next step
    tool_done(outcome)             -> Progress, Audit, then CheckTool | Wait | CallModel
    resume()                       -> after a Wait: the step that waited
    expire()                       -> Finish (max execution time exceeded)
    abort(reason)                  -> Finish (the agent is stopping)

An input that does not fit the run's phase (a stale reply, a late timer) yields no effects.

Limits (``protocols.agent.AgentLimits``), checked between steps
    max_execution_time   before every model call and tool call, after a model error, and when
                         the host's deadline timer fires (``expire``)
    token_budget         input + output tokens as the model reports them: the run stops as soon
                         as a response takes the total past the budget (its tool calls are not
                         run), and before a call when nothing is left
    max_steps            model turns (successful model calls) per run; a call beyond it stops
    tool_calls_per_second  tool calls are spaced at least 1/rate seconds apart (``Wait``)
A run stopped by a limit fails with ``error_class`` None: nothing failed, a limit was reached.

Context compaction (``context_window``, ``compact_at``, ``keep_recent``)
    Before each model call the run estimates the conversation's size: the prompt tokens the
    model reported for the last call, plus its answer, plus about a token per 4 characters of
    what was added since (all of it by characters when the model reports no usage). Past
    ``compact_at`` of ``context_window`` it first asks the model (``CallModel`` with purpose
    ``compaction``, no tools) to summarise the older turns, and replaces them with one
    summary message (``protocols.prompts.summary_message``); the system prompt, the request
    and the last ``keep_recent`` messages stay, cut so that no tool result loses the call it
    answers. A context-length error from the provider (``is_context_length_error``) triggers
    one compaction and a retry of the call instead of failing the run; a second one in a row
    is fatal as before. A compaction's tokens count toward the budget; it is not a step.

Model errors (``classify``), and what the run does with them
    retryable   429 (Retry-After honoured), 408, 409, 5xx, timeouts, connection errors, an
                open circuit: retried in place up to ``model_retries`` times, waiting
                max(Retry-After, backoff(attempt), the breaker's cool-down); then the run
                fails and the host exits with ``error:retryable:<Type>: <message>[;
                retry_after=<s>]`` (its supervisor restarts it, see ``decide``)
    fatal       every other 4xx (401, 403, 400 such as a context length, 404, 422) and a
                second malformed tool call in one run: ``error:fatal:<Type>: <message>``
    unknown     anything else (an unexpected response, a bug): ``error:<Type>: <message>``
A malformed tool call (arguments that are not a JSON object) is answered once per run with an
``ERROR MalformedToolCall`` tool result, so the model can correct itself; the second is fatal,
since the same model on the same conversation is unlikely to do better.

The circuit breaker (``CircuitBreaker``) belongs to the agent, not the run: it counts
consecutive retryable and unknown model failures, opens after ``failures`` of them, lets one
trial call through after ``cooldown`` seconds (half open) and closes on a success.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from actors.agents.agent_tools import (
    OUTPUT_LIMIT,
    TOOLS,
    ToolArgumentError,
    ToolOutcome,
    ToolPlan,
    plan_tool,
)
from actors.agents.model_guard import (
    CircuitBreaker,
    CircuitOpen,
    Clock,
    MalformedToolCall,
    ModelFailure,
    RateLimiter,
    classify,
    is_context_length_error,
)
from actors.core.restart import backoff_delay
from protocols.agent import (
    AgentResult,
    ErrorClass,
    ProgressKind,
    RunGoal,
    ToolCallRecord,
    Usage,
)
from protocols.goals import files_asked
from protocols.prompts import (
    agent_system_prompt,
    compaction_prompt,
    estimate_tokens,
    format_tool_error,
    summary_message,
    tool_definitions,
)

__all__ = [
    "ARGUMENT_LIMIT",
    "AUDIT_ARGUMENT_LIMIT",
    "DEFAULT_COMPACT_AT",
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_KEEP_RECENT",
    "MALFORMED_TOLERATED",
    "RESULT_EXCERPT",
    "AgentRun",
    "Audit",
    "CallModel",
    "CheckTool",
    "Effect",
    "ExecuteTool",
    "Finish",
    "ModelTurn",
    "Progress",
    "RequestedToolCall",
    "RunPhase",
    "TokenAccount",
    "Wait",
    "compaction_cut",
    "conversation_tokens",
    "turn_from_completion",
]


MALFORMED_TOLERATED: Final = 1
RESULT_EXCERPT: Final = 200
ARGUMENT_LIMIT: Final = 2000
AUDIT_ARGUMENT_LIMIT: Final = 200
_EPSILON: Final = 1e-6
_TIMEOUT_SLACK: Final = 0.02
_PATH_ACTIONS: Final = frozenset({"read", "write", "list"})
DEFAULT_CONTEXT_WINDOW: Final = 128_000
DEFAULT_COMPACT_AT: Final = 0.8
DEFAULT_KEEP_RECENT: Final = 6
_HEAD: Final = 2  # the system prompt and the request: never compacted


def _message_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(json.dumps(m, default=str)) for m in messages)


def conversation_tokens(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    reported: tuple[int, int, int] | None = None,
) -> int:
    """Estimate the tokens the next model call will send.

    Args:
        messages: the conversation.
        tools: the tool definitions sent with it.
        reported: (prompt tokens, completion tokens, how many messages that prompt had) of
            the last call, when the model reported usage: the messages after it are estimated
            and added; otherwise the whole conversation and the tools are estimated (about one
            token per 4 characters).
    """
    if reported is not None and reported[0] > 0:
        prompt, completion, count = reported
        return prompt + completion + _message_tokens(messages[count + 1 :])
    return _message_tokens(messages) + estimate_tokens(json.dumps(tools))


def compaction_cut(messages: list[dict[str, Any]], keep_recent: int) -> int:
    """Return the index of the first message kept after a compaction (``_HEAD`` when there is
    nothing to fold).

    The last ``keep_recent`` messages are kept, and more if needed so that the kept part starts
    with an assistant message or a user message: a tool result is never kept without the
    assistant message whose call it answers.
    """
    cut = max(_HEAD, len(messages) - keep_recent)
    while cut > _HEAD and messages[cut].get("role") == "tool":
        cut -= 1
    return cut


@dataclass
class TokenAccount:
    """Tokens used by one run against its budget (None: unlimited)."""

    budget: int | None
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens so far."""
        return self.input_tokens + self.output_tokens

    def add(self, input_tokens: int, output_tokens: int) -> None:
        """Count one response's tokens (negative counts are taken as 0)."""
        self.input_tokens += max(0, int(input_tokens))
        self.output_tokens += max(0, int(output_tokens))

    def exceeded(self) -> bool:
        """True when more tokens were used than the budget allows."""
        return self.budget is not None and self.total > self.budget

    def exhausted(self) -> bool:
        """True when no token is left for another call."""
        return self.budget is not None and self.total >= self.budget

    def usage(self) -> Usage:
        """The tokens so far, as the protocol's Usage."""
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)

    def describe(self) -> str:
        """``token budget exceeded: used N of B tokens``."""
        return f"token budget exceeded: used {self.total} of {self.budget} tokens"


# --- The model's answer -------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedToolCall:
    """One tool call the model asked for; ``arguments`` is None when they are not a JSON object."""

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None
    problem: str | None = None

    @classmethod
    def parse(cls, call_id: str, name: str, raw_arguments: str) -> RequestedToolCall:
        """Read a tool call's JSON arguments; keep the problem when they are not an object."""
        try:
            value = json.loads(raw_arguments or "{}")
        except json.JSONDecodeError as exc:
            return cls(call_id, name, raw_arguments, None, f"arguments are not JSON: {exc}")
        if not isinstance(value, dict):
            problem = f"arguments must be a JSON object, got {type(value).__name__}"
            return cls(call_id, name, raw_arguments, None, problem)
        return cls(call_id, name, raw_arguments, value)


@dataclass(frozen=True)
class ModelTurn:
    """A model response: its text, its tool calls and the tokens it reports."""

    content: str | None
    tool_calls: tuple[RequestedToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    refusal: str | None = None

    def assistant_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.raw_arguments},
                }
                for c in self.tool_calls
            ]
        return message


def turn_from_completion(completion: Any) -> ModelTurn:
    """Read a chat completion (``openai.types.chat.ChatCompletion``) into a ModelTurn.

    Raises:
        ValueError: the completion has no choice.
    """
    choices = getattr(completion, "choices", None) or []
    if not choices:
        msg = "the model's response has no choices"
        raise ValueError(msg)
    message = choices[0].message
    calls = []
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        if function is None:
            calls.append(
                RequestedToolCall(
                    str(call.id),
                    str(getattr(call, "type", "tool")),
                    "",
                    None,
                    "only function tool calls are supported",
                )
            )
        else:
            calls.append(
                RequestedToolCall.parse(
                    str(call.id), str(function.name), str(function.arguments or "")
                )
            )
    usage = getattr(completion, "usage", None)
    refusal = getattr(message, "refusal", None)
    return ModelTurn(
        content=message.content,
        refusal=str(refusal) if refusal else None,
        tool_calls=tuple(calls),
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


# --- Effects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallModel:
    """Call the model with this conversation and these tools, within ``timeout`` seconds
    (``purpose``: an agent ``turn``, or a ``compaction`` of older turns, sent without tools)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    timeout: float
    purpose: Literal["turn", "compaction"] = "turn"


@dataclass(frozen=True)
class CheckTool:
    """Ask the access manager whether the current tool call may run."""

    tool: str
    action: str
    resource: str


@dataclass(frozen=True)
class ExecuteTool:
    """Run the current tool call on ``target`` (the resolved path, or the command)."""

    tool: str
    arguments: dict[str, Any]
    target: str
    workspace: str
    timeout: float
    network: bool = False


@dataclass(frozen=True)
class Wait:
    """Call ``resume`` after ``seconds`` (a rate limit or an in-place retry)."""

    seconds: float
    why: Literal["rate_limit", "retry"]


@dataclass(frozen=True)
class Progress:
    """Tell the run's ``progress_to`` what happened."""

    what: ProgressKind
    detail: dict[str, Any]


@dataclass(frozen=True)
class Audit:
    """Append a tool call to the audit log."""

    action: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Finish:
    """Answer the RunGoal with ``result``; then exit with ``exit_reason`` if it is set."""

    result: AgentResult
    exit_reason: str | None = None


Effect = CallModel | CheckTool | ExecuteTool | Wait | Progress | Audit | Finish
RunPhase = Literal["new", "model", "compacting", "access", "tool", "waiting", "done"]


def _clip_value(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... [{len(value) - limit} more characters]"
    return value


def _excerpt(text: str, limit: int = RESULT_EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- The run --------------------------------------------------------------------------------


@dataclass
class _Current:
    call: RequestedToolCall
    plan: ToolPlan | None = None
    started: float | None = None
    reason: str = ""


@dataclass
class AgentRun:
    """One goal being run: the conversation, the limits, and what to do next.

    Args:
        goal: the RunGoal.
        agent: the agent's name (its access subject).
        breaker: the agent's circuit breaker (shared by its runs).
        clock: monotonic seconds.
        model_retries: retryable model errors retried in place per run.
        retry_backoff: (base, cap) of the exponential backoff between in-place retries.
        command_timeout: seconds a run_command may take (at most the time left).
        context_window: the model's context, in tokens.
        compact_at: the share of ``context_window`` past which older turns are compacted.
        keep_recent: the messages kept as they are by a compaction (at least).
    """

    goal: RunGoal
    agent: str
    breaker: CircuitBreaker
    clock: Clock = time.monotonic
    model_retries: int = 0
    retry_backoff: tuple[float, float] = (0.1, 5.0)
    command_timeout: float = 30.0
    context_window: int = DEFAULT_CONTEXT_WINDOW
    compact_at: float = DEFAULT_COMPACT_AT
    keep_recent: int = DEFAULT_KEEP_RECENT
    phase: RunPhase = "new"
    steps: list[ToolCallRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    turns: int = 0
    retries: int = 0
    malformed: int = 0
    compactions: int = 0
    result: AgentResult | None = None

    def __post_init__(self) -> None:
        """Build the conversation and the per-run budgets."""
        spec, limits = self.goal.spec, self.goal.limits
        names = ["read_file", "write_file", "list_directory"]
        if limits.allow_commands:
            names.append("run_command")
        self.tool_names: tuple[str, ...] = tuple(names)
        self.tools = tool_definitions(self.tool_names)
        system = agent_system_prompt(
            spec.goal,
            spec.original_request,
            spec.constraints,
            spec.acceptance_criteria,
            spec.workspace,
        )
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": spec.original_request or spec.goal},
        ]
        self.tokens = TokenAccount(limits.token_budget)
        self.limiter = RateLimiter(limits.tool_calls_per_second, clock=self.clock)
        self.started_at = 0.0
        self.limit: float | None = limits.max_execution_time
        self.deadline = math.inf
        self._queue: deque[RequestedToolCall] = deque()
        self._current: _Current | None = None
        self._after_wait: Literal["model", "tool"] = "model"
        self._wake_at = 0.0
        self._reported: tuple[int, int, int] | None = None
        self._sent = 0  # messages in the conversation of the model call in flight
        self._compacted = False  # the conversation was compacted since the last model turn
        self._cut = _HEAD
        self._compaction_cause: Literal["threshold", "context_length_error"] = "threshold"

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.goal.run_id

    # --- inputs ---------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """Begin the run: the first model call."""
        if self.phase != "new":
            return []
        self.started_at = self.clock()
        self.limit = self.goal.limits.max_execution_time
        self.deadline = self.started_at + (self.limit if self.limit is not None else math.inf)
        return self._next_model()

    def set_max_execution_time(self, seconds: float | None) -> list[Effect]:
        """Change the time limit, counted from the run's start (None: unlimited); a run already
        past the new limit ends at once (out of time)."""
        self.limit = seconds
        if self.phase == "new":
            return []
        self.deadline = self.started_at + (seconds if seconds is not None else math.inf)
        if self.phase != "done" and self.clock() >= self.deadline:
            return self._out_of_time()
        return []

    def model_replied(self, turn: ModelTurn) -> list[Effect]:
        """The model answered: count its tokens, then run its tool calls or finish (or, for a
        compaction, fold the older turns into its summary and make the next call)."""
        if self.phase == "compacting":
            return self._compacted_with(turn)
        if self.phase != "model":
            return []
        self.breaker.record_success()
        self.turns += 1
        self.tokens.add(turn.input_tokens, turn.output_tokens)
        self._reported = (turn.input_tokens, turn.output_tokens, self._sent)
        self._compacted = False
        effects: list[Effect] = [
            Progress(
                "model_call",
                {
                    "step": self.turns,
                    "call": self.turns,
                    "input_tokens": turn.input_tokens,
                    "output_tokens": turn.output_tokens,
                    "total_tokens": self.tokens.total,
                    "tool_calls": [c.name for c in turn.tool_calls],
                },
            )
        ]
        if self.tokens.exceeded():
            return effects + self._finish(False, error=self.tokens.describe())
        self.messages.append(turn.assistant_message())
        if not turn.tool_calls:
            return effects + self._final_answer(turn)
        self._queue.extend(turn.tool_calls)
        return effects + self._next_tool()

    def _final_answer(self, turn: ModelTurn) -> list[Effect]:
        """The model answered without a tool call: the run succeeds unless the model refused,
        or the goal asks for files and none was written."""
        output = turn.content or turn.refusal or ""
        if turn.refusal:
            return self._finish(False, output=output, error=f"the model refused: {turn.refusal}")
        asked = files_asked(self.goal.spec.goal)
        if asked and not self.files:
            error = f"the goal asks for {', '.join(asked)} but the agent wrote no file"
            return self._finish(False, output=output, error=error)
        return self._finish(True, output=output)

    def model_failed(self, exc: BaseException) -> list[Effect]:
        """The model call raised: retry in place, or fail the run (and exit the agent)."""
        if self.phase not in ("model", "compacting"):
            return []
        if self.phase == "model" and is_context_length_error(exc) and not self._compacted:
            effects = self._compact("context_length_error")
            if effects:
                return effects
        failure = classify(exc)
        if failure.error_class != "fatal":
            self.breaker.record_failure()
        return self._model_error(failure)

    def access_decided(
        self, *, allowed: bool, reason: str, resolved: str = "", network: bool = False
    ) -> list[Effect]:
        """The access manager answered the current tool call's check (``network``: the
        agent's grant has network on)."""
        current = self._current
        if self.phase != "access" or current is None or current.plan is None:
            return []
        current.reason = reason
        if not allowed:
            return self._complete(False, format_tool_error("AccessDenied", reason), allowed=False)
        plan = current.plan
        target = resolved if plan.action in _PATH_ACTIONS and resolved else plan.resource
        self.phase = "tool"
        assert current.call.arguments is not None  # noqa: S101 - planned calls have arguments
        timeout = max(0.1, min(self.command_timeout, self.deadline - self.clock()))
        return [
            ExecuteTool(
                current.call.name,
                current.call.arguments,
                target,
                self.goal.spec.workspace,
                timeout,
                network,
            )
        ]

    def tool_done(self, outcome: ToolOutcome) -> list[Effect]:
        """The current tool call ran."""
        if self.phase != "tool" or self._current is None:
            return []
        if outcome.written is not None and outcome.written not in self.files:
            self.files.append(outcome.written)
        return self._complete(outcome.ok, outcome.output, allowed=True)

    def resume(self) -> list[Effect]:
        """A Wait is over: take up the step that waited (or wait the rest of it)."""
        if self.phase != "waiting":
            return []
        early = self._wake_at - self.clock()
        if early > _EPSILON:
            return [Wait(early, "retry" if self._after_wait == "model" else "rate_limit")]
        return self._next_model() if self._after_wait == "model" else self._next_tool()

    def expire(self) -> list[Effect]:
        """The host's deadline timer fired: stop the run if it is still going."""
        if self.phase in ("new", "done"):
            return []
        return self._out_of_time()

    def abort(self, reason: str) -> list[Effect]:
        """The agent is stopping: end the run as failed."""
        if self.phase == "done":
            return []
        return self._finish(False, error=f"the agent stopped ({reason}) before the run finished")

    # --- steps ----------------------------------------------------------------------------

    def _out_of_time(self) -> list[Effect]:
        elapsed = self.clock() - self.started_at
        limit = self.limit if self.limit is not None else math.inf
        return self._finish(
            False, error=f"max execution time exceeded: ran {elapsed:.2f}s, the limit is {limit:g}s"
        )

    def _next_model(self) -> list[Effect]:
        if self.clock() >= self.deadline:
            return self._out_of_time()
        if self.tokens.exhausted():
            return self._finish(False, error=self.tokens.describe())
        max_steps = self.goal.limits.max_steps
        if self.turns >= max_steps:
            return self._finish(
                False, error=f"max steps exceeded: {max_steps} model turns without a final answer"
            )
        if not self.breaker.allow():
            return self._model_error(classify(CircuitOpen(self.breaker.retry_in())))
        if not self._compacted and self._over_threshold():
            effects = self._compact("threshold")
            if effects:
                return effects
        self.phase = "model"
        started = Progress(
            "model_call_started", {"call": self.turns + 1, "total_tokens": self.tokens.total}
        )
        self._sent = len(self.messages)
        return [started, CallModel(list(self.messages), self.tools, self.deadline - self.clock())]

    # --- compaction -------------------------------------------------------------------------

    def context_tokens(self) -> int:
        """The estimated tokens of the next model call's conversation."""
        return conversation_tokens(self.messages, self.tools, reported=self._reported)

    def _over_threshold(self) -> bool:
        return self.context_tokens() > self.compact_at * self.context_window

    def _compact(self, cause: Literal["threshold", "context_length_error"]) -> list[Effect]:
        """Ask the model to summarise the older turns ([] when there are none to fold)."""
        cut = compaction_cut(self.messages, self.keep_recent)
        if cut <= _HEAD:
            return []
        self.phase, self._cut, self._compaction_cause = "compacting", cut, cause
        prompt = compaction_prompt(self.messages[_HEAD:cut])
        return [
            Progress(
                "compaction",
                {
                    "cause": cause,
                    "folded": cut - _HEAD,
                    "kept": len(self.messages) - cut,
                    "context_tokens": self.context_tokens(),
                    "context_window": self.context_window,
                },
            ),
            CallModel(
                [{"role": "user", "content": prompt}],
                [],
                self.deadline - self.clock(),
                purpose="compaction",
            ),
        ]

    def _compacted_with(self, turn: ModelTurn) -> list[Effect]:
        self.breaker.record_success()
        self.tokens.add(turn.input_tokens, turn.output_tokens)
        before = conversation_tokens(self.messages, self.tools)  # same estimate as after
        head, recent = self.messages[:_HEAD], self.messages[self._cut :]
        self.messages = [*head, summary_message(turn.content or ""), *recent]
        self.compactions += 1
        self._reported, self._compacted = None, True
        effects: list[Effect] = [
            Progress(
                "compaction",
                {
                    "cause": self._compaction_cause,
                    "done": True,
                    "context_tokens_before": before,
                    "context_tokens": self.context_tokens(),
                    "input_tokens": turn.input_tokens,
                    "output_tokens": turn.output_tokens,
                    "total_tokens": self.tokens.total,
                },
            )
        ]
        if self.tokens.exceeded():
            return effects + self._finish(False, error=self.tokens.describe())
        return effects + self._next_model()

    def _model_error(self, failure: ModelFailure) -> list[Effect]:
        now = self.clock()
        # A call cut off by the run's own deadline times out as it ends: allow for rounding.
        slack = _TIMEOUT_SLACK if failure.type_name == "APITimeoutError" else 0.0
        if now + slack >= self.deadline:
            return self._out_of_time()
        effects: list[Effect] = []
        if failure.error_class == "retryable" and self.retries < self.model_retries:
            base, cap = self.retry_backoff
            wait = max(
                failure.retry_after or 0.0,
                backoff_delay(self.retries, base=base, cap=cap),
                self.breaker.retry_in(),
            )
            if now + wait < self.deadline:
                self.retries += 1
                self.phase, self._after_wait, self._wake_at = "waiting", "model", now + wait
                effects.append(
                    Progress(
                        "model_call",
                        {
                            "error": failure.error(),
                            "error_class": failure.error_class,
                            "retry": self.retries,
                            "retry_in": wait,
                            "total_tokens": self.tokens.total,
                        },
                    )
                )
                return [*effects, Wait(wait, "retry")]
        effects.append(
            Progress(
                "model_call",
                {
                    "error": failure.error(),
                    "error_class": failure.error_class,
                    "total_tokens": self.tokens.total,
                },
            )
        )
        return effects + self._finish(
            False,
            error=failure.error(),
            error_class=failure.error_class,
            exit_reason=failure.exit_reason(),
        )

    def _next_tool(self) -> list[Effect]:
        if self.clock() >= self.deadline:
            return self._out_of_time()
        if self._current is None:
            if not self._queue:
                return self._next_model()
            self._current = _Current(self._queue.popleft())
        call = self._current.call
        if call.arguments is None:
            self.malformed += 1
            problem = f"{call.name}: {call.problem}"
            if self.malformed > MALFORMED_TOLERATED:
                failure = classify(MalformedToolCall(problem))
                return self._finish(
                    False,
                    error=failure.error(),
                    error_class="fatal",
                    exit_reason=failure.exit_reason(),
                )
            return self._complete(False, format_tool_error("MalformedToolCall", problem))
        if call.name not in self.tool_names:
            error = "ToolNotAvailable" if call.name in TOOLS else "UnknownTool"
            return self._complete(
                False,
                format_tool_error(
                    error,
                    f"{call.name!r} is not one of this run's tools: {', '.join(self.tool_names)}",
                ),
            )
        try:
            plan = plan_tool(call.name, call.arguments, self.goal.spec.workspace)
        except ToolArgumentError as exc:
            return self._complete(False, format_tool_error("InvalidArguments", str(exc)))
        wait = self.limiter.try_acquire()
        if wait > 0:
            now = self.clock()
            self.phase, self._after_wait, self._wake_at = "waiting", "tool", now + wait
            return [Wait(wait, "rate_limit")]
        self._current.plan, self._current.started = plan, self.clock()
        self.phase = "access"
        started = Progress(
            "tool_call_started",
            {"name": call.name, "resource": plan.resource, "call": len(self.steps) + 1},
        )
        return [started, CheckTool(call.name, plan.action, plan.resource)]

    def _complete(self, ok: bool, output: str, *, allowed: bool | None = None) -> list[Effect]:
        current = self._current
        assert current is not None  # noqa: S101 - called with a current tool call
        self._current = None
        call = current.call
        duration = self.clock() - current.started if current.started is not None else 0.0
        arguments = (
            call.arguments if call.arguments is not None else {"raw_arguments": call.raw_arguments}
        )
        self.steps.append(
            ToolCallRecord(
                name=call.name,
                duration=duration,
                error=not ok,
                result=_excerpt(output),
                arguments={k: _clip_value(v, ARGUMENT_LIMIT) for k, v in arguments.items()},
            )
        )
        clipped = output if len(output) <= OUTPUT_LIMIT else output[:OUTPUT_LIMIT] + "\n[...]"
        self.messages.append({"role": "tool", "tool_call_id": call.id, "content": clipped})
        denied = allowed is False
        detail: dict[str, Any] = {
            "name": call.name,
            "error": not ok,
            "duration": duration,
            "total_tokens": self.tokens.total,
        }
        if denied:
            detail["reason"] = current.reason
        audit = {
            "run_id": self.run_id,
            "tool": call.name,
            "arguments": {
                str(k): _clip_value(
                    v if isinstance(v, str) else json.dumps(v), AUDIT_ARGUMENT_LIMIT
                )
                for k, v in arguments.items()
            },
            "allowed": allowed,
            "reason": current.reason,
            "error": not ok,
            "duration": round(duration, 6),
            "result": _excerpt(output),
        }
        effects: list[Effect] = [
            Progress("tool_denied" if denied else "tool_call", detail),
            Audit(f"tool.{call.name}", audit),
        ]
        return effects + self._next_tool()

    def _finish(
        self,
        success: bool,
        *,
        output: str = "",
        error: str | None = None,
        error_class: ErrorClass | None = None,
        exit_reason: str | None = None,
    ) -> list[Effect]:
        self.phase = "done"
        self._queue.clear()
        self._current = None
        self.result = AgentResult(
            run_id=self.run_id,
            agent=self.agent,
            success=success,
            output=output,
            steps=list(self.steps),
            usage=self.tokens.usage(),
            error=error,
            error_class=error_class,
            files=list(self.files),
        )
        detail = {
            "success": success,
            "error": error,
            "error_class": error_class,
            "steps": len(self.steps),
            "turns": self.turns,
            "total_tokens": self.tokens.total,
        }
        return [Progress("finished", detail), Finish(self.result, exit_reason)]
