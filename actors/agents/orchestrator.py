"""Orchestrator: runs a goal end to end through the lifecycle of DESIGN.md section 4.

Phases of a run (each start and end is a PhaseEvent, and a structlog event):

    interview       (``RunGoalRequest.interview``) the model rates the request: a non-task
                    gets a ChatReply, an ambiguous one ClarifyingQuestions answered in the
                    same session (AnswerQuestions), a clear one starts the run; the pure
                    part is ``actors.agents.orchestrator_interview``; its model calls are
                    CompletePrompts to agents, as every model call of this actor
    specification   from the model for complex goals (as the interview rated them, else by
                    their length), straight from the message otherwise
    execution       the lifecycle below, or parallel subtasks delegated through the registry
    evaluation      each acceptance criterion checked against the workspace
                    (``actors.agents.judge``: files, their formats and fields, programs run in
                    the agents' sandbox); the model is asked only about what no check could
                    decide, and may refute it, never pass it; the score is the share of all
                    criteria met (``unverified`` ones count as not met), whatever any model says
    evolution       a revised specification (previous output and unmet criteria added as
                    constraints) executed again, up to ``evolutions`` times; the best-scoring
                    result is kept (its files put back if a later attempt wrote worse ones) and
                    the run stops at ``threshold``

A simple goal's criteria are the checkable criteria of its writes
(``protocols.goals.criteria_for_goal``: ``primes.py exists``, ``primes.py is valid Python``,
``running primes.py prints the first 10 primes``), else the goal itself; a model-made
specification gets them too, first. Only goal-like criteria (not such checks) count towards
splitting a goal into subtasks.

The lifecycle of one execution (the source's seven steps):
    1 start an agent under the agents supervisor       4 ensure its permissions (access)
    2 register its card (capabilities from the goal;   5 submit a task with the run's priority
      ``busy``: it is not offered to other runs)         and start it (scheduler)
    3 the registry delivers messages held for it       6 run it under the maximum execution
    7 on success or failure: unregister the card,        time, killing it on timeout
      complete / fail / time out the task, stop it,
      revoke its grants

Model calls (specification, evaluation) never run in this actor: each is a ``CompletePrompt``
to an agent started for it under the agents supervisor (its own process on multiprocTCPBase,
sharing the endpoint's circuit breaker with every agent), so a slow model never
stalls the orchestrator's timers, ``WaitRun`` or ``SetMaxExecutionTime``.

Maximum execution time: each agent run is killed ``max_execution_time`` seconds after that
agent started (``protocols.orchestrator`` has the default, the override and ``0`` for
unlimited); a change re-arms the timer from the agent's start and moves the agent's own
backstop (``SetRunTimeLimit``). A killed agent's wait is given up ``cleanup_time`` later if
its exit has not failed it already: no wait of a run outlives its limit plus its cleanup.

Stopping (``CancelRun``, or the run manager's StopRun noticed through a refused command or a
stopped record): the run's flow is cancelled where it stands (``cancel_flow``), every agent of
the run is terminated (a delegate outside the agents supervisor gets ``CancelGoal``), its model
calls with them, its tasks cancelled, its run and child runs stopped in the run manager; the
outcome is ``stopped``. A result that arrives after the stop is kept in the outcome.

An agent is granted (as its path) every tool, its run's workspace (its temp directory is
inside it), no network, and the programs of the ``programs`` arg (globs for run_command; none
by default); the grants are revoked when its execution ends.

Subtasks (``actors.agents.orchestrator_plan``) each carry their own goal, capability and share
of the request; each has a child run under the run's record; they run in parallel on agents
found by capability (``FindAgents``, available ones only), each delegation audited
(``AppendAudit``, action ``delegate``), the delegate marked busy while it works, through a
circuit breaker with retries and exponential backoff (base 100 ms, cap 5 s, 3 tries), falling
back to running the subtask directly; results come back in the subtasks' order.
Specifications and outcomes are written to ``<state_dir>/orchestrator/<run id>/``.

Args: ``agents``, ``access``, ``scheduler``, ``registry``, ``runs`` (peers' paths),
``programs``, ``max_execution_time`` (the deployment default, seconds, ``0`` unlimited;
default 60; a live change is kept in ``<state_dir>/orchestrator/settings.json``),
``model_timeout`` (seconds per specification or evaluation call, default 60),
``cleanup_time`` (seconds a killed agent's wait may outlive its limit, default 10), ``base_url``,
``model``, ``api_key`` (passed to the model-call agents when given), ``delegate_tries``,
``breaker_failures``, ``breaker_cooldown`` (the delegation breaker).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from actors.agents.judge import Runner, judge_workspace, sandbox_runner
from actors.agents.model_guard import CircuitBreaker
from actors.agents.orchestrator_interview import (
    COMPLEX_AT,
    InterviewSession,
    InterviewVerdict,
    Sessions,
    clarified_request,
    judge_rating,
)
from actors.agents.orchestrator_plan import (
    CLEANUP_SECONDS,
    agent_backstop,
    effective_limit,
    plan_subtasks,
    subtask_spec,
    time_left,
)
from actors.agents.orchestrator_telemetry import ModelTally, RunWatchers
from actors.core.flow import All, Call, Flow, Sleep
from actors.core.restart import backoff_delay
from actors.core.worker import Worker
from actors.errors import RequestRejected
from protocols._base import Message
from protocols.access import AppendAudit, EnsurePermissions, RevokePermissions
from protocols.agent import (
    AgentLimits,
    AgentProgress,
    AgentResult,
    CancelGoal,
    CompletePrompt,
    GoalSpec,
    PromptCompleted,
    RunGoal,
    SetRunTimeLimit,
)
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.errors import UnderstudyError
from protocols.goals import criteria_for_goal
from protocols.orchestrator import (
    AnswerQuestions,
    CancelRun,
    ChatReply,
    ClarifyingQuestions,
    GetModelStatistics,
    GetRunProgress,
    Phase,
    PhaseEvent,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    SetMaxExecutionTime,
    Subtask,
    WaitRun,
    _RunStopRequested,
    _RunStuck,
    _RunTimer,
    _WaitExpired,
    _WatchExpired,
)
from protocols.prompts import (
    evaluation_prompt,
    interview_prompt,
    parse_evaluation,
    parse_interview,
    parse_specification,
    score_of,
    specification_prompt,
)
from protocols.registry import (
    AgentCard,
    AgentsFound,
    AgentSkill,
    FindAgents,
    RegisterAgent,
    UnregisterAgent,
    UpdateStatus,
)
from protocols.runs import (
    AttachAgent,
    CompleteRun,
    CreateRun,
    FailRun,
    GetRun,
    RunInfo,
    StaleEpochIgnored,
    StopRun,
)
from protocols.scheduler import (
    CancelTask,
    CompleteTask,
    FailTask,
    StartTask,
    SubmitTask,
    TaskInfo,
    TimeOutTask,
)
from protocols.supervision import ChildInfo, StartChild, TerminateChild

__all__ = [
    "DEFAULT_MAX_EXECUTION_TIME",
    "DELEGATE_BACKOFF",
    "DELEGATE_TRIES",
    "MAX_FILE_BYTES",
    "Orchestrator",
    "infer_capabilities",
    "is_complex",
]

log = structlog.get_logger("understudy.orchestrator")

DELEGATE_TRIES = 3
DELEGATE_BACKOFF = (0.1, 5.0)
DEFAULT_MAX_EXECUTION_TIME = 60.0
MAX_FILE_BYTES = 64 * 1024
_SETTINGS = "settings.json"
_CAPABILITY_WORDS = {
    "files.write": ("write", "save", "create", "store"),
    "files.read": ("read", "summarise", "summarize", "open"),
    "files.list": ("list", "show"),
    "commands.run": ("run", "execute"),
    "writing.poetry": ("haiku", "poem", "verse"),
}


def infer_capabilities(goal: str) -> list[str]:
    """Return the capability tags a goal needs (for the agent's card), always with "general"."""
    words = set(re.findall(r"[a-z]+", goal.lower()))
    found = [tag for tag, keys in _CAPABILITY_WORDS.items() if words & set(keys)]
    return ["general", *found]


def is_complex(goal: str) -> bool:
    """A goal is complex (worth a model-made specification) when it has several clauses."""
    return len(goal.split()) > 25 or bool(re.search(r"\b(and then|then|;)\b|;", goal))


class _Stopped(Exception):
    """Raised inside a run's flow when the run is stopped."""


class _Stuck(Exception):
    """Raised inside a run's flow when a killed agent's wait outlived its cleanup time."""


@dataclass
class _Agent:
    """One agent working on a run: our own (under the agents supervisor) or a delegate."""

    path: str
    name: str
    agent_run: str  # the run id the agent was sent
    child_id: str | None = None  # None for a delegate (not ours to stop)
    task_id: str | None = None
    started: float | None = None  # monotonic, when it was sent its RunGoal


@dataclass
class _Run:
    run_id: str
    request: RunGoalRequest
    workspace: str
    events: list[PhaseEvent] = field(default_factory=list)
    outcome: RunOutcome | None = None
    waiters: dict[int, Callable[[Message], None]] = field(default_factory=dict)
    override: float | None = None  # its own maximum execution time (None: the default)
    generation: int = 0
    executing: dict[int, _Agent] = field(default_factory=dict)
    timed_out: set[int] = field(default_factory=set)
    timers: dict[int, int] = field(default_factory=dict)
    helpers: dict[str, str] = field(default_factory=dict)  # model-call agents: child id -> path
    record: RunInfo | None = None  # the run manager's record of this run, when there is one
    flow: int = 0
    stopping: str | None = None  # why the run is being stopped
    finishing: bool = False  # its outcome is decided; only the bookkeeping is left
    late: AgentResult | None = None  # a result that arrived after the stop
    original: str | None = None  # the interview's whole exchange, when there was one
    complexity: float | None = None  # as the interview rated it


class Orchestrator(Worker):
    """Runs goals: RunGoalRequest -> RunAccepted; GetRunProgress; WaitRun -> RunOutcome;
    CancelRun -> RunOutcome (stopped); SetMaxExecutionTime."""

    def on_start(self) -> None:
        """Read the peers' paths and the model endpoint from args (or the environment)."""
        args = self.args
        self.agents_path = str(args.get("agents", "root/agents"))
        self.access_path = str(args.get("access", "root/system/access"))
        self.scheduler_path = str(args.get("scheduler", "root/system/scheduler"))
        self.registry_path = str(args.get("registry", "root/system/registry"))
        self.runs_path = str(args.get("runs", "root/system/runs"))
        # The programs an agent's run_command may run (globs; none unless the topology says).
        self.programs = [str(p) for p in args.get("programs", [])]
        # Given to the agents that make the model calls; without them, the agents' own args.
        self.model_args = {
            key: str(args[key]) for key in ("base_url", "model", "api_key") if args.get(key)
        }
        self.model_timeout = float(args.get("model_timeout", 60.0))
        self.cleanup_time = float(args.get("cleanup_time", CLEANUP_SECONDS))
        self.delegate_tries = int(args.get("delegate_tries", DELEGATE_TRIES))
        # Programs the criteria name run in the agents' sandbox (``run_programs: false``: not
        # run, their criteria stay unverified).
        self.runner: Runner | None = sandbox_runner if args.get("run_programs", True) else None
        self.breaker = CircuitBreaker(
            int(args.get("breaker_failures", 3)), float(args.get("breaker_cooldown", 5.0))
        )
        self.runs: dict[str, _Run] = {}
        self.sessions = Sessions()
        self.watchers = RunWatchers()
        self.tally = ModelTally()
        self._ids = itertools.count(1)
        self._prefix = f"run-{int(time.time())}-{os.getpid()}"
        self.store = self.state_dir / "orchestrator"
        self.default_max_time = float(args.get("max_execution_time", DEFAULT_MAX_EXECUTION_TIME))
        settings = self.store / _SETTINGS
        if settings.exists():
            try:
                saved = json.loads(settings.read_text())
                self.default_max_time = float(saved["max_execution_time"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("settings_not_read", file=str(settings), error=repr(exc))
        self._reload()

    def _reload(self) -> None:
        """Bring back the runs of earlier incarnations from the store: an ended run keeps its
        outcome; a run that was still going when this orchestrator stopped is failed (and
        said so), never silently forgotten."""
        if not self.store.is_dir():
            return
        for folder in sorted(p for p in self.store.iterdir() if p.is_dir()):
            try:
                outcome_file = folder / "outcome.json"
                if outcome_file.exists():
                    outcome = RunOutcome.model_validate_json(outcome_file.read_text())
                    spec = outcome.spec
                else:
                    specs = sorted(folder.glob("spec-*.json"))
                    if not specs:
                        continue
                    spec = GoalSpec.model_validate_json(specs[-1].read_text())
                    outcome = RunOutcome(
                        run_id=folder.name,
                        status="failed",
                        success=False,
                        score=0.0,
                        scores=[],
                        spec=spec,
                        error=("the orchestrator restarted before the run ended"),
                    )
                    outcome_file.write_text(outcome.model_dump_json(indent=2) + "\n")
                    log.warning("run_interrupted", run_id=folder.name)
            except (OSError, ValueError) as exc:
                log.error("run_not_reloaded", run_id=folder.name, error=repr(exc))
                continue
            request = RunGoalRequest(goal=spec.goal, workspace=spec.workspace)
            self.runs[folder.name] = _Run(folder.name, request, spec.workspace, outcome=outcome)

    # --- Messages -------------------------------------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Answer one orchestrator command (or an internal timer, or a late reply)."""
        match message:
            case RunGoalRequest():
                return self._interview(message) if message.interview else self._start_run(message)
            case AnswerQuestions():
                return self._answer_questions(message)
            case GetRunProgress():
                return self._progress(message)
            case _WatchExpired():
                run = self.runs.get(message.run_id)
                self.watchers.expire(
                    message.run_id, message.watcher, run.outcome if run is not None else None
                )
                return None
            case GetModelStatistics():
                return self.tally.snapshot(delegation=self.breaker.state)
            case WaitRun():
                return self._wait(message)
            case SetMaxExecutionTime():
                return self._set_max_time(message)
            case CancelRun():
                return self._cancel(message)
            case AgentProgress():
                self.tally.record(message)
                run = self.runs.get(message.run_id.split(".", 1)[0])
                if run is not None and message.what != "finished":
                    detail = {**message.detail, "step": message.what, "agent": message.agent}
                    self._phase(run, "execution", "progress", **detail)
                return None
            case _RunTimer():
                self._on_timer(message)
                return None
            case _RunStuck():
                self._on_stuck(message)
                return None
            case _RunStopRequested():
                run = self.runs.get(message.run_id)
                if run is not None:
                    self._stop(run, message.reason)
                return None
            case _WaitExpired():
                run = self.runs.get(message.run_id)
                reply = run.waiters.pop(message.waiter, None) if run else None
                if run is not None and reply is not None:
                    reply(RunProgress(run_id=run.run_id, events=run.events, outcome=run.outcome))
                return None
            case AgentResult() | ChildInfo() | TaskInfo() | Ok() | PromptCompleted() | RunInfo():
                self._late_reply(message)
                return None
        log.warning("unexpected_message", actor=self.path, kind=message.kind)
        return ErrorReply(
            error=ErrorName.UNEXPECTED_MESSAGE,
            message=f"the orchestrator does not handle {message.kind!r}",
        )

    def _late_reply(self, message: Message) -> None:
        """A reply whose flow was cancelled (a stopped run): settle what it started."""
        match message:
            case AgentResult():
                run = self.runs.get(message.run_id.split(".", 1)[0])
                if run is not None and run.stopping is not None:
                    self._keep_late_result(run, message)
            case ChildInfo():  # an agent started for a run stopped meanwhile
                log.info("late_agent_terminated", actor=self.path, child_id=message.id)
                self.send(self.agents_path, TerminateChild(child_id=message.id))
            case TaskInfo() if message.state in ("pending", "running"):
                log.info("late_task_cancelled", actor=self.path, task_id=message.id)
                self.send(
                    self.scheduler_path,
                    CancelTask(task_id=message.id, reason="its run was stopped"),
                )
            case _:
                log.debug("late_reply_ignored", actor=self.path, kind=message.kind)

    def _keep_late_result(self, run: _Run, result: AgentResult) -> None:
        run.late = result
        if run.outcome is not None and run.outcome.result is None:
            run.outcome = run.outcome.model_copy(update={"result": result})
            self._persist(run, "outcome.json", run.outcome)
        self._phase(
            run, "run", "progress", step="late_result", agent=result.agent, success=result.success
        )

    def _start_run(
        self, request: RunGoalRequest, session: InterviewSession | None = None
    ) -> Message:
        if not request.goal.strip():
            return ErrorReply(error=ErrorName.INVALID_GOAL, message="the goal is empty")
        run_id = f"{self._prefix}-{next(self._ids)}"
        workspace = request.workspace or str(self.state_dir / "workspaces" / run_id)
        if not os.path.isabs(workspace):
            return ErrorReply(
                error=ErrorName.INVALID_GOAL,
                message=f"workspace must be an absolute path, got {workspace!r}",
            )
        Path(workspace).mkdir(parents=True, exist_ok=True)
        run = _Run(run_id, request, workspace, override=request.max_execution_time)
        self.runs[run_id] = run
        if session is not None:
            self._interviewed(run, session)
        run.flow = self.run_flow(self._run(run))
        return RunAccepted(
            run_id=run_id,
            workspace=workspace,
            session_id=session.session_id if session is not None else None,
            goal=run.request.goal if session is not None else None,
        )

    # --- The interview: the first phase of an interviewed request ---------------------------

    def _interview(self, request: RunGoalRequest) -> Message | None:
        if not request.goal.strip():
            return ErrorReply(error=ErrorName.INVALID_GOAL, message="the goal is empty")
        session = InterviewSession(f"{self._prefix}-i{next(self._ids)}", request)
        self.sessions.add(session)
        self.run_flow(self._interview_round(session, self.defer_reply()))
        return None

    def _answer_questions(self, message: AnswerQuestions) -> Message | None:
        session = self.sessions.get(message.session_id, message.owner)
        if session is None:
            return ErrorReply(
                error=ErrorName.UNKNOWN_SESSION,
                message=f"unknown interview session {message.session_id!r}",
            )
        try:
            session.answer(message.answers)
        except ValueError as exc:
            return ErrorReply(error=ErrorName.INVALID_ANSWERS, message=str(exc))
        self.run_flow(self._interview_round(session, self.defer_reply()))
        return None

    def _interview_round(
        self, session: InterviewSession, answer: Callable[[Message], None]
    ) -> Flow:
        """Have the model rate the request so far, then answer a chat reply, questions, or
        start the run (also when the model cannot be asked: the interview is then skipped)."""
        request = session.request
        try:
            text = yield from self._rate(
                session, interview_prompt(request.goal, session.clarifications)
            )
            verdict = judge_rating(session, parse_interview(text))
        except UnderstudyError as exc:
            log.warning("interview_failed", session_id=session.session_id, error=repr(exc))
            verdict = InterviewVerdict("run", forced=True)
        rating = session.ratings[-1] if session.ratings else None
        log.info(
            "interview_rated",
            session_id=session.session_id,
            action=verdict.action,
            ambiguity=rating.ambiguity if rating else None,
            complexity=rating.complexity if rating else None,
            round=session.rounds,
        )
        if verdict.action == "chat":
            self.sessions.close(session.session_id)
            answer(ChatReply(session_id=session.session_id, reply=verdict.reply))
        elif verdict.action == "ask":
            assert rating is not None  # noqa: S101 - questions come from a rating
            answer(
                ClarifyingQuestions(
                    session_id=session.session_id,
                    questions=list(verdict.questions),
                    ambiguity=rating.ambiguity,
                    complexity=rating.complexity,
                    round=session.rounds,
                )
            )
        else:
            self.sessions.close(session.session_id)
            answer(self._start_run(clarified_request(session)[0], session))

    def _rate(self, session: InterviewSession, prompt: str) -> Flow:
        """The interview's model call, made by an agent started for it (as ``_complete``; no
        run exists yet to own it)."""
        name = f"{session.session_id}-rate{next(self._ids)}"
        info = yield Call(self.agents_path, StartChild(args={"name": name, **self.model_args}))
        assert isinstance(info, ChildInfo)  # noqa: S101 - the supervisor's answer
        failure: UnderstudyError | None = None
        reply: Message | None = None
        try:
            reply = yield Call(
                f"{self.agents_path}/{info.id}",
                CompletePrompt(prompt=prompt, timeout=self.model_timeout),
                timeout=self.model_timeout + self.cleanup_time,
            )
        except UnderstudyError as exc:
            failure = exc
        try:
            yield Call(self.agents_path, TerminateChild(child_id=info.id))
        except UnderstudyError as exc:
            log.debug("agent_already_gone", session_id=session.session_id, error=str(exc))
        if failure is not None:
            raise failure
        assert isinstance(reply, PromptCompleted)  # noqa: S101 - the agent's answer
        self.tally.record_call(
            reply.model,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
        )
        return reply.text

    def _interviewed(self, run: _Run, session: InterviewSession) -> None:
        rating = session.ratings[-1] if session.ratings else None
        run.complexity = rating.complexity if rating is not None else None
        run.original = clarified_request(session)[1]
        self._phase(
            run,
            "interview",
            "finished",
            session_id=session.session_id,
            rounds=session.rounds,
            ambiguity=rating.ambiguity if rating is not None else None,
            complexity=run.complexity,
            clarifications=[{"question": q, "answer": a} for q, a in session.clarifications],
            rated=rating is not None,
            goal=run.request.goal,
        )

    def _progress(self, message: GetRunProgress) -> Message | None:
        """Answer the events after the cursor; with ``wait``, hold the answer until there
        are some (a long poll: each event reaches its followers as it happens)."""
        run = self.runs.get(message.run_id)
        if run is None:
            return _unknown(message.run_id)
        if message.wait > 0 and len(run.events) <= message.since and run.outcome is None:
            watcher = next(self._ids)
            reply = self.defer_reply()
            timer = self.call_later(message.wait, _WatchExpired(run_id=run.run_id, watcher=watcher))
            self.watchers.hold(
                run.run_id,
                watcher,
                since=message.since,
                max_events=message.max_events,
                reply=reply,
                timer=timer,
            )
            return None
        end = message.since + message.max_events
        return RunProgress(
            run_id=run.run_id, events=run.events[message.since : end], outcome=run.outcome
        )

    def _wait(self, message: WaitRun) -> Message | None:
        run = self.runs.get(message.run_id)
        if run is None:
            return _unknown(message.run_id)
        if run.outcome is not None:
            return run.outcome
        waiter = next(self._ids)
        run.waiters[waiter] = self.defer_reply()
        self.call_later(message.timeout, _WaitExpired(run_id=run.run_id, waiter=waiter))
        return None

    def _cancel(self, message: CancelRun) -> Message | None:
        run = self.runs.get(message.run_id)
        if run is None:
            return _unknown(message.run_id)
        if run.outcome is not None:
            return run.outcome
        run.waiters[next(self._ids)] = self.defer_reply()
        self._stop(run, message.reason)
        return None

    def _stop(self, run: _Run, reason: str) -> None:
        """Stop ``run`` where it stands: its flow goes on in its stop branch. A run whose
        outcome is already decided ends as decided (its waiters get that outcome)."""
        if run.outcome is not None or run.finishing:
            return
        if run.stopping is None:
            run.stopping = reason
            self._phase(run, "run", "progress", step="stopping", reason=reason)
        for generation in list(run.timers):
            self._disarm(run, generation)
        self.cancel_flow(run.flow, _Stopped(run.stopping))

    # --- Maximum execution time -------------------------------------------------------------

    def _limit(self, run: _Run) -> float | None:
        return effective_limit(run.override, self.default_max_time)

    def _set_max_time(self, message: SetMaxExecutionTime) -> Message:
        if message.run_id is None:
            self.default_max_time = message.seconds
            self.store.mkdir(parents=True, exist_ok=True)
            (self.store / _SETTINGS).write_text(
                json.dumps({"max_execution_time": message.seconds}) + "\n"
            )
            log.info("default_max_execution_time_changed", seconds=message.seconds)
            for following in self.runs.values():
                if following.outcome is None and following.override is None:
                    self._limit_changed(following)
            return Ok()
        run = self.runs.get(message.run_id)
        if run is None:
            return _unknown(message.run_id)
        run.override = message.seconds
        self._limit_changed(run)
        return RunProgress(run_id=run.run_id, events=[], outcome=run.outcome)

    def _limit_changed(self, run: _Run) -> None:
        """Re-arm every agent's timer from its start, and move the agents' own backstops."""
        limit = self._limit(run)
        for generation, agent in list(run.executing.items()):
            if agent.started is None or generation in run.timed_out:
                continue
            self._arm(run, generation)
            backstop = agent_backstop(limit)
            try:
                self.send(
                    agent.path,
                    SetRunTimeLimit(run_id=agent.agent_run, max_execution_time=backstop),
                )
            except UnderstudyError as exc:
                log.warning("time_limit_not_sent", run_id=run.run_id, error=str(exc))
        self._phase(run, "execution", "progress", max_execution_time=limit or 0)

    def _arm(self, run: _Run, generation: int) -> None:
        self._disarm(run, generation)
        agent = run.executing.get(generation)
        if agent is None or agent.started is None:
            return
        left = time_left(agent.started, self._limit(run), time.monotonic())
        if left is not None:
            run.timers[generation] = self.call_later(
                left, _RunTimer(run_id=run.run_id, generation=generation)
            )

    def _disarm(self, run: _Run, generation: int) -> None:
        token = run.timers.pop(generation, None)
        if token is not None:
            self.cancel_call(token)

    def _on_timer(self, timer: _RunTimer) -> None:
        run = self.runs.get(timer.run_id)
        if run is None or run.stopping is not None or timer.generation not in run.executing:
            return
        agent = run.executing[timer.generation]
        run.timers.pop(timer.generation, None)
        run.timed_out.add(timer.generation)
        limit = self._limit(run)
        self._phase(
            run,
            "execution",
            "progress",
            step="timed_out",
            agent=agent.path,
            max_execution_time=limit,
        )
        why = f"maximum execution time of {limit} s exceeded"
        self.run_flow(self._kill(run, agent, why))
        self.call_later(
            self.cleanup_time, _RunStuck(run_id=run.run_id, generation=timer.generation)
        )

    def _on_stuck(self, stuck: _RunStuck) -> None:
        run = self.runs.get(stuck.run_id)
        if run is None or run.outcome is not None or run.finishing:
            return
        agent = run.executing.get(stuck.generation)
        if agent is None or run.stopping is not None:
            return
        log.error("run_wait_given_up", run_id=run.run_id, agent=agent.path)
        self.cancel_flow(
            run.flow,
            _Stuck(
                f"{agent.path} did not answer within its maximum execution time plus "
                f"{self.cleanup_time:g} s of cleanup"
            ),
        )

    # --- A run ----------------------------------------------------------------------------

    def _run(self, run: _Run) -> Flow:
        request = run.request
        self._phase(run, "run", "started", goal=request.goal, workspace=run.workspace)
        outcome: RunOutcome | None = None
        try:
            outcome = yield from self._attempts(run)
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 - a run fails, the orchestrator goes on
            log.error("run_failed", run_id=run.run_id, error=repr(exc))
            outcome = self._failed(run, str(exc) if isinstance(exc, _Stuck) else repr(exc))
        run.finishing = True  # from here on, a stop no longer interrupts this flow
        if run.executing or run.helpers:
            yield from self._teardown(run, run.stopping or "the run ended")
        if run.stopping is not None:
            outcome = yield from self._stopped(run, outcome)
        else:
            assert outcome is not None  # noqa: S101 - set unless stopped
            outcome = yield from self._record(run, outcome)
        self._finish(run, outcome)

    def _failed(self, run: _Run, error: str) -> RunOutcome:
        return RunOutcome(
            run_id=run.run_id,
            status="failed",
            success=False,
            score=0.0,
            scores=[],
            spec=GoalSpec(goal=run.request.goal, workspace=run.workspace),
            error=error,
        )

    def _attempts(self, run: _Run) -> Flow:
        request = run.request
        try:
            record = yield Call(self.runs_path, CreateRun(owner=request.owner, goal=request.goal))
            run.record = record if isinstance(record, RunInfo) else None
        except UnderstudyError as exc:
            log.warning("run_not_recorded", run_id=run.run_id, error=str(exc))
        spec = yield from self._specify(run)
        best: _Attempt | None = None
        scores: list[float] = []
        for attempt in range(request.evolutions + 1):
            self._persist(run, f"spec-{attempt}.json", spec)
            self._phase(run, "execution", "started", attempt=attempt)
            subtasks = plan_subtasks(request, spec)
            parts: list[AgentResult] = []
            if subtasks:
                parts = yield from self._parallel(run, spec, subtasks, attempt)
                result = _merge(run.run_id, parts)
            else:
                result = yield from self._lifecycle(run, spec, f"a{attempt}", run.record)
            self._phase(
                run,
                "execution",
                "finished",
                attempt=attempt,
                success=result.success,
                error=result.error,
            )
            if not result.success:
                yield from self._check_stopped(run)
            judged = yield from self._evaluate(run, spec, result)
            scores.append(judged.score)
            if best is None or judged.score > best.judged.score:
                best = _Attempt(attempt, judged, result, parts, _snapshot(result.files))
            if judged.score >= request.threshold or attempt == request.evolutions:
                break
            spec = self._evolve(run, spec, result, judged.unmet, judged.feedback)
        assert best is not None  # noqa: S101 - at least one attempt ran
        if best.attempt != len(scores) - 1:
            self._restore(run, best)
        success = best.result.success and best.judged.score >= request.threshold
        return RunOutcome(
            run_id=run.run_id,
            status="completed" if success else "failed",
            success=success,
            score=best.judged.score,
            scores=scores,
            spec=spec,
            result=best.result,
            subtask_results=best.parts,
            unmet=best.judged.unmet,
            unverified=best.judged.unverified,
            error=None if success else _failure(best, request.threshold),
        )

    def _check_stopped(self, run: _Run) -> Flow:
        """Ask the run manager whether the run was stopped there (its StopRun killed our
        agents); if so, stop here too."""
        if run.record is None:
            return
        try:
            info = yield Call(self.runs_path, GetRun(run_id=run.record.id, owner=run.request.owner))
        except UnderstudyError as exc:
            log.warning("run_status_unknown", run_id=run.run_id, error=str(exc))
            return
        if isinstance(info, RunInfo) and info.status == "stopped":
            self._stopped_elsewhere(run, "stopped in the run manager")

    def _stopped_elsewhere(self, run: _Run, reason: str) -> None:
        """The run manager stopped the run: stop this part of the flow now, and the whole
        flow (every parallel part) from outside it, at once."""
        if run.stopping is None:
            run.stopping = reason
            self._phase(run, "run", "progress", step="stopping", reason=reason)
            self.call_later(0, _RunStopRequested(run_id=run.run_id, reason=reason))
        raise _Stopped(reason)

    def _record(self, run: _Run, outcome: RunOutcome) -> Flow:
        """Report the outcome to the run manager; a run it stopped meanwhile keeps the result
        there and here, but its status stays ``stopped``."""
        if run.record is None:
            return outcome
        report: Message = (
            CompleteRun(
                run_id=run.record.id,
                owner=run.request.owner,
                epoch=run.record.epoch,
                result={"score": outcome.score, "run_id": run.run_id},
            )
            if outcome.success
            else FailRun(
                run_id=run.record.id,
                owner=run.request.owner,
                epoch=run.record.epoch,
                reason=outcome.error or f"score {outcome.score}",
            )
        )
        try:
            info = yield Call(self.runs_path, report)
        except UnderstudyError as exc:
            log.warning("run_not_recorded", run_id=run.run_id, error=str(exc))
            return outcome
        if isinstance(info, RunInfo) and info.status == "stopped":
            run.stopping = "stopped in the run manager"
            return outcome.model_copy(
                update={"status": "stopped", "success": False, "error": f"stopped: {run.stopping}"}
            )
        return outcome

    def _stopped(self, run: _Run, partial: RunOutcome | None) -> Flow:
        """Record the stop in the run manager (it stops the child runs and terminates their
        agents too) and make the ``stopped`` outcome, keeping any result there is."""
        run.finishing = True
        if run.record is not None:
            try:
                yield Call(
                    self.runs_path,
                    StopRun(run_id=run.record.id, owner=run.request.owner, wait=5.0),
                    timeout=10.0,
                )
            except UnderstudyError as exc:
                log.warning("run_stop_not_recorded", run_id=run.run_id, error=str(exc))
        base = partial or self._failed(run, "")
        return base.model_copy(
            update={
                "status": "stopped",
                "success": False,
                "error": f"stopped: {run.stopping}",
                "result": base.result or run.late,
            }
        )

    def _teardown(self, run: _Run, why: str) -> Flow:
        """End every agent still working on ``run`` (ours terminated, delegates cancelled),
        and every model call in flight."""
        flows = [self._kill(run, agent, why, cancel_task=True) for agent in run.executing.values()]
        run.executing.clear()
        for child_id in list(run.helpers):
            flows.append(self._terminate(run, child_id))
        run.helpers.clear()
        yield All(flows)

    def _finish(self, run: _Run, outcome: RunOutcome) -> None:
        run.outcome = outcome
        self._persist(run, "outcome.json", outcome)
        self._phase(
            run,
            "run",
            "finished",
            status=outcome.status,
            success=outcome.success,
            score=outcome.score,
        )
        for reply in run.waiters.values():
            reply(outcome)
        run.waiters.clear()

    # --- Specification, evaluation, evolution (the model, through an agent) ------------------

    def _specify(self, run: _Run) -> Flow:
        request = run.request
        self._phase(run, "specification", "started")
        use_model = (
            request.specify_with_model
            if request.specify_with_model is not None
            else run.complexity >= COMPLEX_AT
            if run.complexity is not None
            else is_complex(request.goal)
        )
        constraints: list[str] = []
        criteria = list(request.criteria)
        source = "message"
        if use_model:
            try:
                text = yield from self._complete(run, specification_prompt(request.goal), "spec")
                made = parse_specification(text)
                constraints = list(made.constraints)
                criteria = criteria or list(made.acceptance_criteria)
                source = "model"
            except UnderstudyError as exc:
                log.warning("specification_failed", run_id=run.run_id, error=repr(exc))
        if not request.criteria:
            # The checkable criteria of the goal's writes come first, whoever specified it.
            criteria = list(dict.fromkeys([*criteria_for_goal(request.goal), *criteria]))
        spec = GoalSpec(
            goal=request.goal,
            original_request=run.original or request.goal,
            constraints=constraints,
            acceptance_criteria=criteria or [request.goal],
            workspace=run.workspace,
        )
        self._phase(
            run, "specification", "finished", source=source, criteria=spec.acceptance_criteria
        )
        return spec

    def _evaluate(self, run: _Run, spec: GoalSpec, result: AgentResult) -> Flow:
        """Check every criterion against the workspace (``actors.agents.judge``); ask the model
        only about what no check could decide. The model can refute such a criterion, never
        pass it; the score is the share of all criteria met, whatever the model says it is. A
        failed execution scores 0 (its checks are reported; no model call to wait for)."""
        self._phase(run, "evaluation", "started")
        criteria = list(spec.acceptance_criteria)
        checked = judge_workspace(criteria, run.workspace, runner=self.runner)
        met, unmet, unverified = checked.met, checked.unmet, checked.unverified
        feedback = checked.feedback()
        if not result.success:
            self._phase(
                run,
                "evaluation",
                "finished",
                score=0.0,
                met=met,
                unmet=unmet,
                unverified=unverified,
                judged=False,
            )
            return _Evaluated(0.0, unmet, unverified, f"{result.error or 'failed'}. {feedback}")
        if unverified:
            files = {path: _read(path) for path in result.files}
            try:
                text = yield from self._complete(
                    run, evaluation_prompt(spec.goal, unverified, result.output, files), "eval"
                )
                opinion = parse_evaluation(text)
            except UnderstudyError as exc:
                log.warning("evaluation_not_read", run_id=run.run_id, error=repr(exc))
                feedback += f" The model's evaluation could not be read: {exc}"
            else:
                refuted = [c for c in unverified if c in opinion.unmet]
                unmet += refuted
                unverified = [c for c in unverified if c not in refuted]
                if opinion.feedback:
                    feedback += f" The model's view: {opinion.feedback}"
        score = score_of(criteria, met)
        self._phase(
            run,
            "evaluation",
            "finished",
            score=score,
            met=met,
            unmet=unmet,
            unverified=unverified,
        )
        return _Evaluated(score, unmet, unverified, feedback)

    def _restore(self, run: _Run, best: _Attempt) -> None:
        """A later attempt did worse: put the best attempt's files back in the workspace."""
        for path, data in best.files.items():
            try:
                Path(path).write_bytes(data)
            except OSError as exc:
                log.warning("file_not_restored", run_id=run.run_id, path=path, error=str(exc))
        self._phase(
            run, "evolution", "progress", kept_attempt=best.attempt, restored=sorted(best.files)
        )

    def _evolve(
        self, run: _Run, spec: GoalSpec, result: AgentResult, unmet: list[str], feedback: str
    ) -> GoalSpec:
        self._phase(run, "evolution", "started", unmet=unmet)
        extra = [f"The previous attempt answered: {result.output[:400]}"]
        if result.error:
            extra.append(f"The previous attempt failed: {result.error[:300]}")
        extra += [f"This criterion was not met: {c}" for c in unmet]
        if feedback:
            extra.append(f"Feedback: {feedback[:400]}")
        revised = spec.model_copy(update={"constraints": [*spec.constraints, *extra]})
        self._phase(run, "evolution", "finished")
        return revised

    def _complete(self, run: _Run, prompt: str, label: str) -> Flow:
        """One model call, made by an agent started for it (never in this actor).

        Raises (in the flow):
            UnderstudyError: the model failed (``ModelError``), or the agent did not answer.
        """
        name = f"{run.run_id}-{label}{next(self._ids)}"
        info = yield Call(self.agents_path, StartChild(args={"name": name, **self.model_args}))
        assert isinstance(info, ChildInfo)  # noqa: S101 - the supervisor's answer
        run.helpers[info.id] = f"{self.agents_path}/{info.id}"
        if run.record is not None:  # so the run manager's StopRun ends this call too
            try:
                yield Call(
                    self.runs_path,
                    AttachAgent(
                        run_id=run.record.id,
                        owner=run.request.owner,
                        agent_path=run.helpers[info.id],
                    ),
                )
            except RequestRejected as exc:
                if exc.error == "InvalidTransition":
                    self._stopped_elsewhere(run, f"the run manager refused the agent: {exc}")
            except UnderstudyError as exc:
                log.warning("agent_not_attached", run_id=run.run_id, error=str(exc))
        phase: Phase = "evaluation" if label == "eval" else "specification"
        self._phase(run, phase, "progress", step="model_call_started", agent=name)
        failure: UnderstudyError | None = None
        reply: Message | None = None
        try:
            reply = yield Call(
                run.helpers[info.id],
                CompletePrompt(prompt=prompt, timeout=self.model_timeout),
                timeout=self.model_timeout + self.cleanup_time,
            )
        except UnderstudyError as exc:
            failure = exc
        if run.helpers.pop(info.id, None) is not None:
            yield from self._terminate(run, info.id)
        if failure is not None:
            self._phase(run, phase, "progress", step="model_call", agent=name, error=str(failure))
            yield from self._check_stopped(run)  # its agent killed by the run manager's StopRun?
            raise failure
        assert isinstance(reply, PromptCompleted)  # noqa: S101 - the agent's answer
        usage = reply.usage
        self.tally.record_call(
            reply.model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
        )
        self._phase(
            run,
            phase,
            "progress",
            step="model_call",
            agent=name,
            model=reply.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        return reply.text

    def _terminate(self, run: _Run, child_id: str) -> Flow:
        try:
            yield Call(self.agents_path, TerminateChild(child_id=child_id))
        except UnderstudyError as exc:
            log.debug("agent_already_gone", run_id=run.run_id, child_id=child_id, error=str(exc))

    # --- The lifecycle of one agent run ---------------------------------------------------

    def _lifecycle(self, run: _Run, spec: GoalSpec, suffix: str, record: RunInfo | None) -> Flow:
        generation = run.generation = run.generation + 1
        name = f"{run.run_id}-{suffix}"  # the agent's card name; its access subject is its path
        info = yield Call(self.agents_path, StartChild(args={"name": name}))
        assert isinstance(info, ChildInfo)  # noqa: S101 - the supervisor's answer
        child_id, path = info.id, f"{self.agents_path}/{info.id}"
        agent_run = run.run_id if suffix.startswith("a") else f"{run.run_id}.{suffix}"
        agent = _Agent(path=path, name=name, agent_run=agent_run, child_id=child_id)
        run.executing[generation] = agent
        self._phase(run, "execution", "progress", step="agent_started", agent=path)
        if record is not None:
            try:
                yield Call(
                    self.runs_path,
                    AttachAgent(run_id=record.id, owner=run.request.owner, agent_path=path),
                )
            except UnderstudyError as exc:
                log.warning("agent_not_attached", run_id=run.run_id, error=str(exc))
                if isinstance(exc, RequestRejected) and exc.error == "InvalidTransition":
                    self._stopped_elsewhere(run, f"the run manager refused the agent: {exc}")
        try:
            skills = [
                AgentSkill(id=tag, name=tag, description=f"can do {tag}", tags=[tag])
                for tag in infer_capabilities(spec.goal)
            ]
            card = AgentCard(
                name=name,
                description=spec.goal[:300],
                version="1.0",
                path=path,
                skills=skills,
                status="busy",  # working for this run: never offered to another as available
            )
            yield Call(self.registry_path, RegisterAgent(card=card))
            yield Call(
                self.access_path,
                EnsurePermissions(
                    agent=path,
                    tools=["*"],
                    programs=self.programs,
                    workspace=f"{run.workspace}/**",
                    network=False,
                ),
            )
            task = yield Call(
                self.scheduler_path,
                SubmitTask(description=spec.goal[:500], agent=path, priority=run.request.priority),
            )
            assert isinstance(task, TaskInfo)  # noqa: S101 - the scheduler's answer
            agent.task_id = task.id
            yield Call(self.scheduler_path, StartTask(task_id=task.id))
            agent.started = time.monotonic()
            self._arm(run, generation)
            limits = AgentLimits(
                token_budget=run.request.token_budget,
                max_execution_time=agent_backstop(self._limit(run)),
            )
            # No timeout here: the run's timer kills the agent, whose exit fails this wait
            # at once; _RunStuck gives it up after the cleanup time if that exit never shows.
            result = yield Call(
                path,
                RunGoal(run_id=agent_run, spec=spec, limits=limits, progress_to=self.path),
                timeout=None,
            )
            assert isinstance(result, AgentResult)  # noqa: S101 - the agent's answer
        except UnderstudyError as exc:
            why = (
                "maximum execution time exceeded"
                if generation in run.timed_out
                else f"the agent failed: {exc}"
            )
            result = AgentResult(run_id=agent_run, agent=path, success=False, error=why)
        run.executing.pop(generation, None)
        self._disarm(run, generation)
        self._phase(
            run,
            "execution",
            "progress",
            step="agent_finished",
            agent=path,
            success=result.success,
            tools=[s.name for s in result.steps],
            tokens=result.usage.total,
            error=result.error,
        )
        yield from self._cleanup(
            run, generation, name, child_id, agent.task_id, succeeded=result.success
        )
        return result

    def _cleanup(
        self,
        run: _Run,
        generation: int,
        name: str,
        child_id: str,
        task_id: str | None,
        *,
        succeeded: bool,
    ) -> Flow:
        """Step 7: unregister the card, settle the task, stop the agent, revoke its grants
        (audited by the access manager; errors only logged)."""
        self._phase(run, "cleanup", "started", agent=name)
        calls: list[Call] = [Call(self.registry_path, UnregisterAgent(name=name))]
        if task_id is not None and generation not in run.timed_out:
            calls.append(
                Call(self.scheduler_path, CompleteTask(task_id=task_id))
                if succeeded
                else Call(
                    self.scheduler_path, FailTask(task_id=task_id, reason="the run did not succeed")
                )
            )
        for call in calls:
            try:
                yield call
            except UnderstudyError as exc:  # already gone / already final: fine
                log.debug("cleanup_step_skipped", run_id=run.run_id, error=str(exc))
        try:
            yield Call(self.agents_path, TerminateChild(child_id=child_id))
        except UnderstudyError as exc:
            log.debug("cleanup_step_skipped", run_id=run.run_id, error=str(exc))
        try:
            yield Call(self.access_path, RevokePermissions(agent=f"{self.agents_path}/{child_id}"))
        except UnderstudyError as exc:
            log.warning("grants_not_revoked", run_id=run.run_id, agent=name, error=str(exc))
        self._phase(run, "cleanup", "finished", agent=name)

    def _kill(self, run: _Run, agent: _Agent, why: str, *, cancel_task: bool = False) -> Flow:
        """End one agent's work on ``run``: its task timed out (or cancelled), its card gone,
        the agent terminated (ours) or told to cancel (a delegate), its grants revoked."""
        if agent.task_id is not None:
            settle: Message = (
                CancelTask(task_id=agent.task_id, reason=why)
                if cancel_task
                else TimeOutTask(task_id=agent.task_id, reason=why)
            )
            try:
                yield Call(self.scheduler_path, settle)
            except UnderstudyError as exc:
                log.debug("task_not_settled", run_id=run.run_id, error=str(exc))
        if agent.child_id is None:
            try:
                yield Call(agent.path, CancelGoal(run_id=agent.agent_run, reason=why), timeout=5.0)
            except UnderstudyError as exc:
                log.info("delegate_not_cancelled", run_id=run.run_id, error=str(exc))
            if cancel_task:  # the run is over: the delegate works for it no more
                yield from self._set_status(run, agent.name, "available")
            return
        try:
            yield Call(self.registry_path, UnregisterAgent(name=agent.name))
        except UnderstudyError:
            log.debug("card_already_gone", run_id=run.run_id, agent=agent.name)
        try:
            yield Call(self.agents_path, TerminateChild(child_id=agent.child_id))
        except UnderstudyError as exc:
            log.warning("agent_kill_failed", run_id=run.run_id, error=str(exc))
        if cancel_task:
            try:
                yield Call(self.access_path, RevokePermissions(agent=agent.path))
            except UnderstudyError as exc:
                log.debug("grants_not_revoked", run_id=run.run_id, error=str(exc))

    # --- Parallel subtasks --------------------------------------------------------------------

    def _parallel(self, run: _Run, spec: GoalSpec, subtasks: list[Subtask], attempt: int) -> Flow:
        self._phase(run, "delegation", "started", subtasks=[s.goal for s in subtasks])
        outcomes = yield All(
            [self._subtask(run, spec, i, sub, attempt) for i, sub in enumerate(subtasks)]
        )
        results = [
            o
            if isinstance(o, AgentResult)
            else AgentResult(run_id=run.run_id, agent="", success=False, error=repr(o))
            for o in outcomes
        ]
        if any(isinstance(o, _Stopped) for o in outcomes):
            raise _Stopped(run.stopping or "stopped")
        self._phase(run, "delegation", "finished", successes=[r.success for r in results])
        return results

    def _subtask(
        self, run: _Run, spec: GoalSpec, index: int, subtask: Subtask, attempt: int
    ) -> Flow:
        sub = subtask_spec(spec, subtask)
        child = yield from self._child_run(run, subtask)
        capability = subtask.capability or run.request.capability
        found = yield Call(self.registry_path, FindAgents(skill_tag=capability, status="available"))
        delegates = (
            [c for c in found.cards if not c.name.startswith(run.run_id)]
            if isinstance(found, AgentsFound)
            else []
        )
        for n in range(self.delegate_tries if delegates else 0):
            target = delegates[n % len(delegates)]
            if self.breaker.allow():
                result = yield from self._delegate(run, sub, index, target, n)
                if result.success:
                    self.breaker.record_success()
                    yield from self._child_done(run, child, result)
                    return result
                error = result.error
                self.breaker.record_failure()
            else:
                error = "circuit breaker open"
            self._phase(
                run,
                "delegation",
                "progress",
                subtask=index,
                delegate=target.path,
                attempt=n,
                success=False,
                error=error,
            )
            if n + 1 < self.delegate_tries:
                yield Sleep(backoff_delay(n, base=DELEGATE_BACKOFF[0], cap=DELEGATE_BACKOFF[1]))
        self._phase(run, "delegation", "progress", subtask=index, fallback="direct")
        result = yield from self._lifecycle(run, sub, f"s{attempt}-{index}", child or run.record)
        yield from self._child_done(run, child, result)
        return result

    def _delegate(self, run: _Run, sub: GoalSpec, index: int, target: AgentCard, n: int) -> Flow:
        """Send one subtask to a delegate found in the registry (audited, marked busy)."""
        generation = run.generation = run.generation + 1
        agent = _Agent(path=target.path, name=target.name, agent_run=f"{run.run_id}.{index}")
        try:
            yield Call(
                self.access_path,
                AppendAudit(
                    actor=target.path,
                    action="delegate",
                    detail={
                        "run_id": run.run_id,
                        "subtask": index,
                        "goal": sub.goal[:300],
                        "delegate": target.name,
                        "attempt": n,
                    },
                ),
            )
        except UnderstudyError as exc:
            log.warning("delegation_not_audited", run_id=run.run_id, error=str(exc))
        yield from self._set_status(run, target.name, "busy")
        self._phase(
            run,
            "delegation",
            "progress",
            step="delegated",
            subtask=index,
            delegate=target.path,
        )
        agent.started = time.monotonic()
        run.executing[generation] = agent
        self._arm(run, generation)
        try:
            reply = yield Call(
                target.path,
                RunGoal(
                    run_id=agent.agent_run,
                    spec=sub,
                    limits=AgentLimits(max_execution_time=agent_backstop(self._limit(run))),
                ),
                timeout=None,  # bounded by the run's timer, as in the lifecycle
            )
            result = (
                reply
                if isinstance(reply, AgentResult)
                else AgentResult(run_id=agent.agent_run, agent=target.path, success=False)
            )
        except UnderstudyError as exc:
            result = AgentResult(
                run_id=agent.agent_run, agent=target.path, success=False, error=str(exc)
            )
        run.executing.pop(generation, None)
        self._disarm(run, generation)
        yield from self._set_status(run, target.name, "available")
        if result.success:
            self._phase(
                run,
                "delegation",
                "progress",
                subtask=index,
                delegate=target.path,
                attempt=n,
                success=True,
            )
        return result

    def _set_status(self, run: _Run, name: str, status: Literal["busy", "available"]) -> Flow:
        try:
            yield Call(self.registry_path, UpdateStatus(name=name, status=status))
        except UnderstudyError as exc:
            log.info("delegate_status_not_set", run_id=run.run_id, status=status, error=str(exc))

    def _child_run(self, run: _Run, subtask: Subtask) -> Flow:
        """Record the subtask as a child run of the run's record (None without a record)."""
        if run.record is None:
            return None
        try:
            child = yield Call(
                self.runs_path,
                CreateRun(owner=run.request.owner, goal=subtask.goal, parent=run.record.id),
            )
        except UnderstudyError as exc:
            log.warning("child_run_not_recorded", run_id=run.run_id, error=str(exc))
            if isinstance(exc, RequestRejected) and exc.error == "InvalidTransition":
                self._stopped_elsewhere(run, f"the run manager refused a child run: {exc}")
            return None
        return child if isinstance(child, RunInfo) else None

    def _child_done(self, run: _Run, child: RunInfo | None, result: AgentResult) -> Flow:
        if child is None:
            return
        report: Message = (
            CompleteRun(
                run_id=child.id,
                owner=child.owner,
                epoch=child.epoch,
                result={"agent": result.agent, "files": result.files},
            )
            if result.success
            else FailRun(
                run_id=child.id,
                owner=child.owner,
                epoch=child.epoch,
                reason=result.error or "the subtask did not succeed",
            )
        )
        try:
            reply = yield Call(self.runs_path, report)
            if isinstance(reply, StaleEpochIgnored):
                log.info("child_run_stale", run_id=run.run_id, child=child.id)
        except UnderstudyError as exc:
            log.warning("child_run_not_recorded", run_id=run.run_id, error=str(exc))

    # --- Bookkeeping ------------------------------------------------------------------------

    def _phase(
        self,
        run: _Run,
        phase: Phase,
        what: Literal["started", "finished", "progress"],
        **detail: Any,
    ) -> None:
        event = PhaseEvent(
            n=len(run.events) + 1,
            time=time.time(),
            phase=phase,
            what=what,
            detail=_jsonable(detail),
        )
        run.events.append(event)
        for timer in self.watchers.release(run.run_id, run.events, run.outcome):
            self.cancel_call(timer)
        log.info(
            f"phase_{what}",  # noqa: G004 - a structlog event name, not a format string
            run_id=run.run_id,
            phase=phase,
            **event.detail,
        )

    def _persist(self, run: _Run, name: str, model: Any) -> None:
        folder = self.store / run.run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(model.model_dump_json(indent=2) + "\n")


@dataclass(frozen=True)
class _Evaluated:
    """One attempt's evaluation: its score, what was not met or not checkable, and why."""

    score: float
    unmet: list[str]
    unverified: list[str]
    feedback: str


@dataclass(frozen=True)
class _Attempt:
    """The best attempt so far, with the files it wrote as they were."""

    attempt: int
    judged: _Evaluated
    result: AgentResult
    parts: list[AgentResult]
    files: dict[str, bytes]


def _snapshot(paths: list[str]) -> dict[str, bytes]:
    """The files an attempt wrote (up to ``MAX_FILE_BYTES`` each), to restore if it is kept."""
    kept: dict[str, bytes] = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError:
            continue
        if len(data) <= MAX_FILE_BYTES:
            kept[path] = data
    return kept


def _failure(best: _Attempt, threshold: float) -> str:
    """Why a run did not succeed: its best attempt's error, else its score and what failed."""
    if best.result.error:
        return best.result.error
    why = f"score {best.judged.score:.2f} is below the threshold {threshold:g}"
    if best.judged.unmet:
        why += f"; unmet: {'; '.join(best.judged.unmet)}"
    if best.judged.unverified:
        why += f"; unverified: {'; '.join(best.judged.unverified)}"
    return why


def _merge(run_id: str, parts: list[AgentResult]) -> AgentResult:
    return AgentResult(
        run_id=run_id,
        agent="",
        success=all(p.success for p in parts),
        output="\n".join(p.output for p in parts),
        steps=[s for p in parts for s in p.steps],
        files=[f for p in parts for f in p.files],
        error="; ".join(p.error for p in parts if p.error) or None,
    )


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_FILE_BYTES).decode("utf-8", "replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(detail, default=str))
    return plain


def _unknown(run_id: str) -> ErrorReply:
    return ErrorReply(error=ErrorName.UNKNOWN_RUN, message=f"unknown run {run_id!r}")
