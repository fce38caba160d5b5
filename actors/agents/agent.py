"""Agent: an LLM agent actor that runs one goal at a time (``actors.agents.agent:Agent``).

Topology entry (agents usually run under a simple_one_for_one supervisor)::

    template: {id: agent, start: "actors.agents.agent:Agent", restart: transient,
               decider: "actors.agents.model_guard:decide_isolated", backoff: {base: 0.1, cap: 5},
               restart_limit: {max_restarts: 3, reset_on: success, on_limit: stop},
               args: {base_url: "http://127.0.0.1:8000/v1", model_retries: 0}}

Each successful run reports a success to the supervisor (``Worker.report_success``), which
clears the agent's restart count; an agent that fails more than ``max_restarts`` times in a
row is stopped alone, its siblings and the other runs unaffected.

Args (all optional)
    name              the agent's name in logs and results (default: its child id); never its
                      access subject, which is its verified path; a reserved name (``system``,
                      a principal's) is refused at start
    base_url          the chat-completions endpoint (default env OPENAI_BASE_URL, else OpenAI's)
    api_key           (default env OPENAI_API_KEY, else a placeholder: local servers need none)
    model             (default env UNDERSTUDY_MODEL, else "understudy-embedded")
    timeout           seconds per model call (default 60; never past the run's deadline)
    access            the access manager's path (default root/system/access)
    breaker_failures  consecutive model failures that open the circuit breaker (default 3)
    breaker_cooldown  seconds the breaker stays open before one trial call (default 5)
    model_retries     retryable model errors retried in place per run (default 0)
    retry_backoff     {base, cap} of the backoff between in-place retries (default 0.1, 5)
    command_timeout   seconds a run_command may take (default 30)
    check_timeout     seconds to wait for an access decision before denying (default 10)
    audit_wait        seconds the result waits for the audit log's acknowledgements (default 2)
    context_window    the model's context in tokens (default 128000)
    compact_at        the share of context_window past which older turns are summarised by
                      the model and replaced (default 0.8; see ``agent_loop``)
    keep_recent       messages a compaction keeps as they are, at least (default 6)

Model endpoints: every agent of a process that uses one endpoint (base URL and key) shares ONE
``openai`` client (``model_endpoint``), and every agent of the deployment that uses it shares
ONE circuit breaker: its state lives in ``<state_dir>/breakers/<endpoint digest>.json``, read
and written under an exclusive ``flock`` at each step (``FileBreaker``; CLOCK_MONOTONIC is the
same in every process of a host), so failures seen by one agent's process open the breaker for
all of them, restarted agents included. The first agent's breaker settings win in a process.

Besides runs, an agent answers ``CompletePrompt`` (one model call without tools, for the
orchestrator's specification and evaluation, so those never block the orchestrator),
``SetRunTimeLimit`` (its run's backstop follows a changed maximum execution time, counted from
the run's start) and ``CancelGoal`` (its run ends at once, as failed, and is answered).

A run (``RunGoal``, answered with ``AgentResult``) is a message-driven loop: a model call
through the real ``openai`` client (``max_retries=0``: retries are ours), then each tool call
checked with the access manager by ``request`` (the answer arrives in ``on_reply``; the actor
never blocks on it), run if granted, recorded, audited (``AppendAudit``) and answered to the
model, then the next model call. The pure loop, its limits and its error classes are in
``actors.agents.agent_loop``; the tools in ``actors.agents.agent_tools``. A model call itself is
synchronous: the actor is busy for its duration (bounded by ``timeout`` and the run's
deadline). So that a follower learns of a call as it starts, the call is made on a message of
its own, once ``progress_to`` has handled the progress sent before it (``model_call_started``;
waiting at most ``PROGRESS_WAIT`` seconds).

The result is sent once the access manager has acknowledged the run's audit entries (or after
``audit_wait``), so a caller that reads the audit log after the result finds them.

Failures and exits (``protocols.agent`` lists the exit reasons)
    a limit (tokens, time, steps)   AgentResult(success=False, error=..., error_class=None);
                                    the agent keeps running
    a model error                   AgentResult(success=False, error_class=...), then the agent
                                    exits with ``error:retryable:...``, ``error:fatal:...`` or
                                    ``error:<Type>: ...``; ``decide`` is the matching decider
                                    (restart after Retry-After / stop / escalate), and
                                    ``decide_isolated`` restarts the unclassified too
Retrying a run after a retryable failure is the caller's job (the lifecycle re-sends RunGoal to
the restarted agent); ``model_retries`` > 0 retries the model call in place instead, waiting at
least the Retry-After each time (``call_later``, never sleeping).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import openai
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.agents.agent_loop import (
    DEFAULT_COMPACT_AT,
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_KEEP_RECENT,
    AgentRun,
    Audit,
    CallModel,
    CheckTool,
    Effect,
    ExecuteTool,
    Finish,
    Progress,
    Wait,
    turn_from_completion,
)
from actors.agents.agent_tools import execute_tool
from actors.agents.model_guard import (
    BreakerState,
    CircuitBreaker,
    classify,
)
from actors.core.keyring import PRINCIPALS_DIR
from actors.core.worker import Worker
from protocols._base import Message
from protocols.access import AccessDenied, AccessGranted, AppendAudit, CheckAccess
from protocols.agent import (
    AgentProgress,
    CancelGoal,
    CompletePrompt,
    PromptCompleted,
    RunGoal,
    SetRunTimeLimit,
    Usage,
)
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.topology import RESERVED_PRINCIPALS, Backoff

__all__ = [
    "DEFAULT_ACCESS",
    "DEFAULT_AGENT_MODEL",
    "Agent",
    "AgentConfig",
    "FileBreaker",
    "SharedEndpoint",
    "model_endpoint",
]

log = structlog.get_logger("understudy.agent")

DEFAULT_ACCESS: Final = "root/system/access"
DEFAULT_AGENT_MODEL: Final = "understudy-embedded"
PLACEHOLDER_KEY: Final = "understudy-no-key"
# A model call waits (rechecking every PROGRESS_RECHECK s) at most PROGRESS_WAIT s for the
# run's follower to handle the progress sent before it (the call's start).
PROGRESS_WAIT: Final = 0.5
PROGRESS_RECHECK: Final = 0.002


def _principal_names(state_dir: Path) -> set[str]:
    """The principals of this deployment (``up`` creates a key file for each)."""
    return {key.stem for key in (state_dir / PRINCIPALS_DIR).glob("*.key")}


class FileBreaker(CircuitBreaker):
    """A circuit breaker whose state is shared through a file by every process using it.

    Each call takes an exclusive lock on the file, loads the state, applies the pure
    ``CircuitBreaker`` transition and writes the state back. A missing or unreadable file is a
    closed breaker.
    """

    def __init__(
        self,
        path: Path,
        failures: int = 3,
        cooldown: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Share the breaker state in ``path`` (its directory is created)."""
        super().__init__(failures, cooldown, clock=clock)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _synced(self) -> Iterator[None]:
        with self.path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
            fh.seek(0)
            text = fh.read()
            try:
                data = json.loads(text) if text else {}
                self.consecutive = int(data.get("consecutive", 0))
                opened = data.get("opened_at")
                self._opened_at = None if opened is None else float(opened)
                self._trial = bool(data.get("trial", False))
                if self._opened_at is not None and self._opened_at > self._clock():
                    # Opened on an earlier boot (the monotonic clock restarted): it is over.
                    self.consecutive, self._opened_at, self._trial = 0, None, False
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("breaker_state_unreadable", file=str(self.path), error=repr(exc))
                self.consecutive, self._opened_at, self._trial = 0, None, False
            yield
            fh.seek(0)
            fh.truncate()
            fh.write(
                json.dumps(
                    {
                        "consecutive": self.consecutive,
                        "opened_at": self._opened_at,
                        "trial": self._trial,
                    }
                )
            )

    @property
    def state(self) -> BreakerState:
        """The shared state now."""
        with self._synced():
            return super().state

    def allow(self) -> bool:
        """Return True if a call may be made now (the one trial call, across processes)."""
        with self._synced():
            return super().allow()

    def retry_in(self) -> float:
        """Seconds until a call may be made."""
        with self._synced():
            return super().retry_in()

    def record_success(self) -> None:
        """A call succeeded: close the shared breaker."""
        with self._synced():
            super().record_success()

    def record_failure(self) -> None:
        """A call failed: count it in the shared state."""
        with self._synced():
            super().record_failure()


@dataclass(frozen=True)
class SharedEndpoint:
    """One model endpoint of this process: its client and its circuit breaker."""

    client: openai.OpenAI
    breaker: CircuitBreaker


_ENDPOINTS: dict[tuple[str | None, str], SharedEndpoint] = {}


def model_endpoint(
    base_url: str | None,
    api_key: str,
    *,
    failures: int = 3,
    cooldown: float = 5.0,
    shared_dir: Path | None = None,
) -> SharedEndpoint:
    """Return this process's client and breaker for the endpoint (made at its first use).

    With ``shared_dir`` the breaker is a ``FileBreaker`` in that directory, shared with every
    other process using the endpoint; without it, one breaker per process.

    The client retries nothing (``max_retries=0``: retries are the run's) and each call sets
    its own timeout; ``failures`` and ``cooldown`` configure the breaker when it is made.
    """
    key = (base_url, api_key)
    endpoint = _ENDPOINTS.get(key)
    if endpoint is None:
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        breaker = CircuitBreaker(failures, cooldown)
        if shared_dir is not None:
            digest = hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:16]
            breaker = FileBreaker(shared_dir / f"{digest}.json", failures, cooldown)
        endpoint = _ENDPOINTS[key] = SharedEndpoint(client, breaker)
    return endpoint


class AgentConfig(BaseModel):
    """The agent's args (see the module doc); unknown keys are ignored with a warning."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    access: str = DEFAULT_ACCESS
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=5.0, ge=0)
    model_retries: int = Field(default=0, ge=0)
    retry_backoff: Backoff = Field(default_factory=Backoff)
    command_timeout: float = Field(default=30.0, gt=0)
    check_timeout: float = Field(default=10.0, gt=0)
    audit_wait: float = Field(default=2.0, ge=0)
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, ge=256)
    compact_at: float = Field(default=DEFAULT_COMPACT_AT, gt=0, le=1)
    keep_recent: int = Field(default=DEFAULT_KEEP_RECENT, ge=1)


# --- Internal messages (timers), never exported ---------------------------------------------


class _Resume(Message):
    """A Wait of run ``run`` is over."""

    kind: Literal["_agent.resume"] = "_agent.resume"
    run: int


class _Deadline(Message):
    """Run ``run`` has reached its max execution time."""

    kind: Literal["_agent.deadline"] = "_agent.deadline"
    run: int


class _CheckExpired(Message):
    """Check ``check`` of run ``run`` got no answer in time (or could not be delivered)."""

    kind: Literal["_agent.check_expired"] = "_agent.check_expired"
    run: int
    check: int
    reason: str


class _CallNow(Message):
    """Make run ``run``'s pending model call (deferred so that what the run sent before it,
    e.g. its ``model_call_started`` progress, leaves first)."""

    kind: Literal["_agent.call_now"] = "_agent.call_now"
    run: int


class _Flush(Message):
    """Stop waiting for audit acknowledgements and send run ``run``'s result."""

    kind: Literal["_agent.flush"] = "_agent.flush"
    run: int
    lost: int = 0


class Agent(Worker):
    """The agent worker (``actors.agents.agent:Agent``): one RunGoal at a time."""

    def on_start(self) -> None:
        """Read the args and make the model client (raising makes the start fail)."""
        unknown = sorted(set(self.args) - set(AgentConfig.model_fields))
        try:
            config = AgentConfig.model_validate(self.args)
        except ValidationError as exc:
            msg = f"invalid agent args: {exc}"
            raise ValueError(msg) from exc
        self._config = config
        self._name = config.name or self.child_id
        if self._name in RESERVED_PRINCIPALS or self._name in _principal_names(self.state_dir):
            msg = f"the agent name {self._name!r} is reserved (the owner or a principal acts as it)"
            raise ValueError(msg)
        self._model = config.model or os.environ.get("UNDERSTUDY_MODEL") or DEFAULT_AGENT_MODEL
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = config.api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
        endpoint = model_endpoint(
            base_url,
            api_key,
            failures=config.breaker_failures,
            shared_dir=self.state_dir / "breakers",
            cooldown=config.breaker_cooldown,
        )
        self._client, self._breaker = endpoint.client, endpoint.breaker
        self._log = log.bind(actor=self.path, agent=self._name)
        self._seq = 0
        self._run: AgentRun | None = None
        self._answer: Callable[[Message], None] | None = None
        self._progress_to: str | None = None
        self._pending_call: tuple[int, CallModel, float] | None = None
        self._deadline_timer: int | None = None
        self._check: tuple[int, CheckTool, int] | None = None  # (number, check, timer)
        self._checks = 0
        self._audits_pending = 0
        self._finished: Finish | None = None
        if unknown:
            self._log.warning("agent_args_ignored", keys=unknown)
        self._log.info("agent_started", model=self._model, base_url=str(self._client.base_url))

    def on_stop(self, reason: str) -> None:
        """End a run in progress as failed (its asker gets the result); the endpoint's client
        stays open for the other agents of this process."""
        if self._run is not None and self._finished is None:
            for effect in self._run.abort(reason):
                if isinstance(effect, Progress):
                    self._progress(self._run, effect)
                elif isinstance(effect, Finish):
                    self._finished = effect
        if self._finished is not None:
            self._deliver(stop=False)

    # --- handle: the messages we accept ---------------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Start a run, or take up a timer or a late reply of the current one."""
        match message:
            case RunGoal():
                return self._start(message)
            case CompletePrompt():
                return self._complete_prompt(message)
            case SetRunTimeLimit():
                return self._set_time_limit(message)
            case CancelGoal():
                return self._cancel(message)
            case AccessGranted() | AccessDenied() | Ok():
                self._reply(message)  # a reply whose request was re-sent (resolution)
                return None
            case _Resume() if self._current(message.run):
                self._drive(self._current_run().resume())
                return None
            case _Deadline() if self._current(message.run):
                self._drive(self._current_run().expire())
                return None
            case _CallNow():
                self._call_now(message)
                return None
            case _CheckExpired():
                self._check_expired(message)
                return None
            case _Flush():
                self._flush(message)
                return None
            case _Resume() | _Deadline():
                return None  # a timer of a run that has ended
            case _:
                self._log.warning("unexpected_message", kind=message.kind)
                return ErrorReply(
                    error=ErrorName.UNEXPECTED_MESSAGE,
                    message=f"the agent does not handle {message.kind!r}",
                )

    def on_reply(self, request_id: int, reply: Message) -> None:
        """An access decision or an audit acknowledgement arrived."""
        del request_id  # matched by content: a re-sent request gets a new id
        self._reply(reply)

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        """The access manager could not take our requests: deny the check, stop waiting."""
        if path != self._config.access:
            self._log.info("progress_undelivered", to=path, count=len(messages), reason=reason)
            return
        if self._check is not None and any(isinstance(m, CheckAccess) for m in messages):
            number = self._check[0]
            self.call_later(
                0,
                _CheckExpired(
                    run=self._seq,
                    check=number,
                    reason=f"the access manager is unavailable: {reason}",
                ),
            )
        lost = sum(isinstance(m, AppendAudit) for m in messages)
        if lost:
            self._log.error("audit_entries_undelivered", count=lost, reason=reason)
            self.call_later(0, _Flush(run=self._seq, lost=lost))

    # --- runs -----------------------------------------------------------------------------

    def _start(self, goal: RunGoal) -> Message | None:
        if self._run is not None:
            busy = self._run.run_id
            return ErrorReply(
                error=ErrorName.AGENT_BUSY,
                message=f"agent {self._name!r} is running {busy!r}; it runs one goal at a time",
            )
        if not posixpath.isabs(goal.spec.workspace) or "\x00" in goal.spec.workspace:
            return ErrorReply(
                error=ErrorName.INVALID_GOAL,
                message=f"the workspace must be an absolute path, got {goal.spec.workspace!r}",
            )
        config = self._config
        self._seq += 1
        self._answer = self.defer_reply()
        self._progress_to = goal.progress_to
        self._finished = None
        self._run = AgentRun(
            goal,
            agent=self._name,
            breaker=self._breaker,
            clock=time.monotonic,
            model_retries=config.model_retries,
            retry_backoff=(config.retry_backoff.base, config.retry_backoff.cap),
            command_timeout=config.command_timeout,
            context_window=config.context_window,
            compact_at=config.compact_at,
            keep_recent=config.keep_recent,
        )
        limit = goal.limits.max_execution_time
        self._deadline_timer = (
            None if limit is None else self.call_later(limit, _Deadline(run=self._seq))
        )
        self._log.info(
            "agent_run_started",
            run_id=goal.run_id,
            goal=goal.spec.goal[:200],
            workspace=goal.spec.workspace,
        )
        self._drive(self._run.start())
        return None

    def _not_running(self, run_id: str) -> ErrorReply:
        return ErrorReply(
            error=ErrorName.UNKNOWN_RUN,
            message=f"agent {self._name!r} is not running {run_id!r}",
        )

    def _running(self, run_id: str) -> AgentRun | None:
        run = self._run
        if run is None or self._finished is not None or run.run_id != run_id:
            return None
        return run

    def _set_time_limit(self, message: SetRunTimeLimit) -> Message:
        run = self._running(message.run_id)
        if run is None:
            return self._not_running(message.run_id)
        effects = run.set_max_execution_time(message.max_execution_time)
        if self._deadline_timer is not None:
            self.cancel_call(self._deadline_timer)
            self._deadline_timer = None
        if not effects and run.deadline != float("inf") and run.phase != "new":
            left = max(0.0, run.deadline - time.monotonic())
            self._deadline_timer = self.call_later(left, _Deadline(run=self._seq))
        self._log.info(
            "agent_time_limit_changed",
            run_id=run.run_id,
            max_execution_time=message.max_execution_time,
        )
        self._drive(effects)
        return Ok()

    def _cancel(self, message: CancelGoal) -> Message:
        run = self._running(message.run_id)
        if run is None:
            return self._not_running(message.run_id)
        self._log.info("agent_run_cancelled", run_id=run.run_id, reason=message.reason)
        self._drive(run.abort(message.reason))
        return Ok()

    def _complete_prompt(self, message: CompletePrompt) -> Message:
        """One model call without tools, on this agent's endpoint and breaker."""
        if self._run is not None:
            return ErrorReply(
                error=ErrorName.AGENT_BUSY,
                message=f"agent {self._name!r} is running {self._run.run_id!r}",
            )
        if not self._breaker.allow():
            return ErrorReply(
                error=ErrorName.MODEL_ERROR,
                message=f"circuit breaker open; retry in {self._breaker.retry_in():.1f}s",
            )
        started = time.monotonic()
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=[{"role": "user", "content": message.prompt}],
                timeout=min(self._config.timeout, message.timeout),
            )
        except Exception as exc:  # noqa: BLE001 - every model error is classified and answered
            failure = classify(exc)
            if failure.error_class != "fatal":
                self._breaker.record_failure()
            self._log.warning(
                "prompt_failed",
                error=failure.error(),
                seconds=round(time.monotonic() - started, 3),
            )
            return ErrorReply(
                error=ErrorName.MODEL_ERROR, message=failure.error(), reason=failure.exit_reason()
            )
        self._breaker.record_success()
        usage = completion.usage
        return PromptCompleted(
            model=self._model,
            text=completion.choices[0].message.content or "",
            usage=Usage(
                input_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else 0,
            ),
        )

    def _current(self, run: int) -> bool:
        return run == self._seq and self._run is not None and self._finished is None

    def _current_run(self) -> AgentRun:
        assert self._run is not None  # noqa: S101 - checked by _current
        return self._run

    def _drive(self, effects: list[Effect]) -> None:
        """Carry out effects in order; those answered at once feed the run straight back."""
        queue = deque(effects)
        while queue:
            effect = queue.popleft()
            run = self._run
            if run is None:
                return
            match effect:
                case CallModel():
                    # Made on the next message: the effects sent so far leave first.
                    self._pending_call = (self._seq, effect, time.monotonic())
                    self.call_later(0, _CallNow(run=self._seq))
                case ExecuteTool():
                    outcome = execute_tool(
                        effect.tool,
                        effect.arguments,
                        effect.target,
                        workspace=effect.workspace,
                        timeout=effect.timeout,
                        network=effect.network,
                    )
                    queue.extend(run.tool_done(outcome))
                case CheckTool():
                    self._request_check(effect)
                case Wait():
                    self.call_later(effect.seconds, _Resume(run=self._seq))
                case Progress():
                    self._progress(run, effect)
                case Audit():
                    self._audits_pending += 1
                    self.request(
                        self._config.access,
                        AppendAudit(actor=self.path, action=effect.action, detail=effect.detail),
                    )
                case Finish():
                    self._finish(effect)

    def _call_now(self, message: _CallNow) -> None:
        if self._pending_call is None or self._pending_call[0] != message.run:
            return  # a call of a run that has ended
        # The call blocks this actor: first let its follower handle what it was told (the
        # call's start), for at most PROGRESS_WAIT seconds.
        run, call, since = self._pending_call
        target = self._progress_to
        if (
            target is not None
            and self.unacknowledged(target) > 0
            and time.monotonic() - since < PROGRESS_WAIT
        ):
            self.call_later(PROGRESS_RECHECK, message)
            return
        self._pending_call = None
        if self._current(run):
            self._drive(self._call_model(self._current_run(), call))

    def _call_model(self, run: AgentRun, call: CallModel) -> list[Effect]:
        timeout = max(0.01, min(self._config.timeout, call.timeout))
        started = time.monotonic()
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=call.messages,  # type: ignore[arg-type]
                tools=call.tools or openai.NOT_GIVEN,  # type: ignore[arg-type]
                timeout=timeout,
            )
            turn = turn_from_completion(completion)
        except Exception as exc:  # noqa: BLE001 - every model error is classified by the run
            self._log.warning(
                "model_call_failed",
                run_id=run.run_id,
                error=type(exc).__name__,
                detail=str(exc)[:300],
                seconds=round(time.monotonic() - started, 3),
            )
            return run.model_failed(exc)
        return run.model_replied(turn)

    def _request_check(self, check: CheckTool) -> None:
        self._checks += 1
        timer = self.call_later(
            self._config.check_timeout,
            _CheckExpired(
                run=self._seq,
                check=self._checks,
                reason=f"no answer from the access manager within {self._config.check_timeout:g}s",
            ),
        )
        self._check = (self._checks, check, timer)
        self.request(
            self._config.access,
            # As its verified path; the tool's glob is checked with the path or program.
            CheckAccess(action=check.action, resource=check.resource, tool=check.tool),
        )

    def _reply(self, reply: Message) -> None:
        if isinstance(reply, Ok):
            if self._audits_pending > 0:
                self._audits_pending -= 1
                if self._audits_pending == 0 and self._finished is not None:
                    self._deliver()
            return
        if not isinstance(reply, AccessGranted | AccessDenied) or self._check is None:
            return
        _number, check, timer = self._check
        if (reply.action, reply.resource) != (check.action, check.resource):
            return  # the answer to a check of a run that has ended
        self.cancel_call(timer)
        self._check = None
        run = self._run
        if run is None:
            return
        allowed = isinstance(reply, AccessGranted)
        if not allowed:
            self._log.info(
                "tool_call_denied",
                run_id=run.run_id,
                tool=check.tool,
                resource=check.resource,
                reason=reply.reason,
            )
        self._drive(
            run.access_decided(
                allowed=allowed,
                reason=reply.reason,
                resolved=reply.resolved,
                network=isinstance(reply, AccessGranted) and reply.network,
            )
        )

    def _check_expired(self, expired: _CheckExpired) -> None:
        if self._check is None or self._check[0] != expired.check or expired.run != self._seq:
            return  # answered meanwhile, or a check of a run that has ended
        self._check = None  # its own timer, if this is not it, fires later and is ignored
        run = self._run
        if run is not None:
            self._log.warning("access_check_failed", run_id=run.run_id, reason=expired.reason)
            self._drive(run.access_decided(allowed=False, reason=expired.reason))

    def _flush(self, flush: _Flush) -> None:
        if flush.lost:
            self._audits_pending = max(0, self._audits_pending - flush.lost)
            if self._audits_pending == 0 and self._finished is not None:
                self._deliver()
        elif flush.run == self._seq and self._finished is not None:
            self._deliver()

    def _progress(self, run: AgentRun, progress: Progress) -> None:
        if self._progress_to is None:
            return
        detail = progress.detail
        if progress.what.startswith("model_call"):
            detail = {**detail, "model": self._model, "breaker": self._breaker.state}
        message = AgentProgress(
            run_id=run.run_id, agent=self._name, what=progress.what, detail=detail
        )
        try:
            self.send(self._progress_to, message)
        except Exception as exc:  # noqa: BLE001 - progress is best effort (e.g. Backpressure)
            self._log.warning("progress_dropped", to=self._progress_to, error=repr(exc))

    def _finish(self, finish: Finish) -> None:
        self._finished = finish
        if self._deadline_timer is not None:
            self.cancel_call(self._deadline_timer)
            self._deadline_timer = None
        if self._check is not None:
            self.cancel_call(self._check[2])
            self._check = None
        if self._audits_pending == 0:
            self._deliver()
        else:
            self.call_later(self._config.audit_wait, _Flush(run=self._seq))

    def _deliver(self, *, stop: bool = True) -> None:
        """Answer the RunGoal with the finished result; exit if the run says so."""
        finish, answer = self._finished, self._answer
        if finish is None:
            return
        result = finish.result
        if self._audits_pending:
            self._log.warning(
                "audit_acknowledgements_missing", run_id=result.run_id, count=self._audits_pending
            )
        self._run, self._finished, self._answer, self._audits_pending = None, None, None, 0
        self._log.info(
            "agent_run_finished",
            run_id=result.run_id,
            success=result.success,
            error=result.error,
            error_class=result.error_class,
            steps=len(result.steps),
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            files=len(result.files),
        )
        if answer is not None:
            answer(result)
        if result.success:
            self.report_success()  # resets this agent's restart_limit (reset_on: success)
        if stop and finish.exit_reason is not None:
            self._log.warning("agent_exiting", reason=finish.exit_reason)
            self.stop(finish.exit_reason)
