"""Orchestrator: runs a goal end to end through the lifecycle of DESIGN.md section 4.

Phases of a run (each start and end is a PhaseEvent, and a structlog event):

    specification   from the model for complex goals, straight from the message otherwise
    execution       the lifecycle below, or parallel subtasks delegated through the registry
    evaluation      the model judges the result against the acceptance criteria
    evolution       a revised specification (previous output and unmet criteria added as
                    constraints) executed again, up to ``evolutions`` times; the best-scoring
                    result is kept and the run stops at ``threshold``

The lifecycle of one execution (the source's seven steps):
    1 start an agent under the agents supervisor       4 ensure its permissions (access)
    2 register its card (capabilities from the goal)   5 submit and start a task (scheduler)
    3 the registry delivers messages held for it       6 run it under the maximum execution
    7 on success or failure: unregister the card,        time (changeable: SetMaxExecutionTime),
      complete / fail / time out the task, stop it,       killing it on timeout
      revoke its grants

An agent is granted (as its path) every tool, its run's workspace (its temp directory is
inside it), no network, and the programs of the ``programs`` arg (globs for run_command; none
by default); the grants are revoked when its execution ends.

Subtasks run in parallel on agents found by capability (``FindAgents``), each delegation
through a circuit breaker with retries and exponential backoff (base 100 ms, cap 5 s, 3 tries),
falling back to running the subtask directly; results come back in the subtasks' order.
Specifications and outcomes are written to ``<state_dir>/orchestrator/<run id>/``.

Every conversation with another actor is a flow (``actors.core.flow``): the orchestrator never
blocks on an actor; it does block on its own model calls (specification, evaluation).
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

import openai
import structlog

from actors.agents.model_guard import CircuitBreaker
from actors.agents.orchestrator_telemetry import ModelTally, RunWatchers
from actors.core.flow import All, Call, Flow, Sleep
from actors.core.restart import backoff_delay
from actors.core.worker import Worker
from protocols._base import Message
from protocols.access import EnsurePermissions, RevokePermissions
from protocols.agent import AgentLimits, AgentProgress, AgentResult, GoalSpec, RunGoal
from protocols.common import ErrorName, ErrorReply
from protocols.errors import UnderstudyError
from protocols.orchestrator import (
    GetModelStatistics,
    GetRunProgress,
    Phase,
    PhaseEvent,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    SetMaxExecutionTime,
    WaitRun,
    _RunTimer,
    _WaitExpired,
    _WatchExpired,
)
from protocols.prompts import (
    evaluation_prompt,
    parse_evaluation,
    parse_specification,
    specification_prompt,
)
from protocols.registry import (
    AgentCard,
    AgentsFound,
    AgentSkill,
    FindAgents,
    RegisterAgent,
    UnregisterAgent,
)
from protocols.runs import AttachAgent, CompleteRun, CreateRun, FailRun, RunInfo
from protocols.scheduler import (
    CompleteTask,
    FailTask,
    StartTask,
    SubmitTask,
    TaskInfo,
    TimeOutTask,
)
from protocols.supervision import ChildInfo, StartChild, TerminateChild

__all__ = [
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
MAX_FILE_BYTES = 64 * 1024
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


@dataclass
class _Run:
    run_id: str
    request: RunGoalRequest
    workspace: str
    events: list[PhaseEvent] = field(default_factory=list)
    outcome: RunOutcome | None = None
    waiters: dict[int, Callable[[Message], None]] = field(default_factory=dict)
    max_time: float = 60.0
    generation: int = 0
    executing: dict[int, tuple[str, str | None, str]] = field(default_factory=dict)
    timed_out: set[int] = field(default_factory=set)
    timers: dict[int, int] = field(default_factory=dict)
    record: RunInfo | None = None  # the run manager's record of this run, when there is one


class Orchestrator(Worker):
    """Runs goals: RunGoalRequest -> RunAccepted; GetRunProgress; WaitRun -> RunOutcome."""

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
        self.model = str(
            args.get("model") or os.environ.get("UNDERSTUDY_MODEL") or "understudy-embedded"
        )
        self.base_url = args.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        self.api_key = str(args.get("api_key") or os.environ.get("OPENAI_API_KEY") or "understudy")
        self.delegate_tries = int(args.get("delegate_tries", DELEGATE_TRIES))
        self.breaker = CircuitBreaker(
            int(args.get("breaker_failures", 3)), float(args.get("breaker_cooldown", 5.0))
        )
        self.runs: dict[str, _Run] = {}
        self.watchers = RunWatchers()
        self.tally = ModelTally()
        self._ids = itertools.count(1)
        self._prefix = f"run-{int(time.time())}-{os.getpid()}"
        self.store = self.state_dir / "orchestrator"
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
        """Answer one orchestrator command (or an internal timer)."""
        if isinstance(message, RunGoalRequest):
            return self._start_run(message)
        if isinstance(message, GetRunProgress):
            return self._progress(message)
        if isinstance(message, _WatchExpired):
            run = self.runs.get(message.run_id)
            self.watchers.expire(
                message.run_id, message.watcher, run.outcome if run is not None else None
            )
            return None
        if isinstance(message, GetModelStatistics):
            return self.tally.snapshot(delegation=self.breaker.state)
        if isinstance(message, WaitRun):
            return self._wait(message)
        if isinstance(message, SetMaxExecutionTime):
            return self._set_max_time(message)
        if isinstance(message, AgentProgress):
            self.tally.record(message)
            run = self.runs.get(message.run_id.split(".", 1)[0])
            if run is not None and message.what != "finished":
                detail = {**message.detail, "step": message.what, "agent": message.agent}
                self._phase(run, "execution", "progress", **detail)
            return None
        if isinstance(message, _RunTimer):
            self._on_timer(message)
            return None
        if isinstance(message, _WaitExpired):
            run = self.runs.get(message.run_id)
            reply = run.waiters.pop(message.waiter, None) if run else None
            if run is not None and reply is not None:
                reply(RunProgress(run_id=run.run_id, events=run.events, outcome=run.outcome))
            return None
        log.warning("unexpected_message", actor=self.path, kind=message.kind)
        return ErrorReply(
            error=ErrorName.UNEXPECTED_MESSAGE,
            message=f"the orchestrator does not handle {message.kind!r}",
        )

    def _start_run(self, request: RunGoalRequest) -> Message:
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
        run = _Run(run_id, request, workspace, max_time=request.max_execution_time)
        self.runs[run_id] = run
        self.run_flow(self._run(run))
        return RunAccepted(run_id=run_id, workspace=workspace)

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

    def _set_max_time(self, message: SetMaxExecutionTime) -> Message:
        run = self.runs.get(message.run_id)
        if run is None:
            return _unknown(message.run_id)
        run.max_time = message.seconds
        for generation in list(run.executing):
            self._arm(run, generation)
        self._phase(run, "execution", "progress", max_execution_time=message.seconds)
        return RunProgress(run_id=run.run_id, events=[], outcome=run.outcome)

    # --- A run ----------------------------------------------------------------------------

    def _run(self, run: _Run) -> Flow:
        request = run.request
        self._phase(run, "run", "started", goal=request.goal, workspace=run.workspace)
        try:
            record = yield Call(self.runs_path, CreateRun(owner=request.owner, goal=request.goal))
            run.record = record if isinstance(record, RunInfo) else None
        except UnderstudyError as exc:
            log.warning("run_not_recorded", run_id=run.run_id, error=str(exc))
        try:
            spec = self._specify(run)
            best: tuple[float, AgentResult | None, list[AgentResult]] = (-1.0, None, [])
            scores: list[float] = []
            for attempt in range(request.evolutions + 1):
                self._persist(run, f"spec-{attempt}.json", spec)
                self._phase(run, "execution", "started", attempt=attempt)
                subtasks = request.subtasks or (
                    list(spec.acceptance_criteria)
                    if len(spec.acceptance_criteria) >= request.split_at
                    else []
                )
                parts: list[AgentResult] = []
                if subtasks:
                    parts = yield from self._parallel(run, spec, subtasks)
                    result = _merge(run.run_id, parts)
                else:
                    result = yield from self._lifecycle(run, spec, f"a{attempt}")
                self._phase(
                    run,
                    "execution",
                    "finished",
                    attempt=attempt,
                    success=result.success,
                    error=result.error,
                )
                score, unmet, feedback = self._evaluate(run, spec, result)
                scores.append(score)
                if score > best[0]:
                    best = (score, result, parts)
                if score >= request.threshold or attempt == request.evolutions:
                    break
                spec = self._evolve(run, spec, result, unmet, feedback)
            best_score, best_result, best_parts = best
            outcome = RunOutcome(
                run_id=run.run_id,
                success=bool(best_result and best_result.success)
                and best_score >= request.threshold,
                score=max(best_score, 0.0),
                scores=scores,
                spec=spec,
                result=best_result,
                subtask_results=best_parts,
            )
        except Exception as exc:  # noqa: BLE001 - a run fails, the orchestrator goes on
            log.error("run_failed", run_id=run.run_id, error=repr(exc))
            outcome = RunOutcome(
                run_id=run.run_id,
                success=False,
                score=0.0,
                scores=[],
                spec=GoalSpec(goal=request.goal, workspace=run.workspace),
                error=repr(exc),
            )
        if run.record is not None:
            report: Message = (
                CompleteRun(
                    run_id=run.record.id,
                    owner=request.owner,
                    epoch=run.record.epoch,
                    result={"score": outcome.score, "run_id": run.run_id},
                )
                if outcome.success
                else FailRun(
                    run_id=run.record.id,
                    owner=request.owner,
                    epoch=run.record.epoch,
                    reason=outcome.error or f"score {outcome.score}",
                )
            )
            try:
                yield Call(self.runs_path, report)
            except UnderstudyError as exc:
                log.warning("run_not_recorded", run_id=run.run_id, error=str(exc))
        self._finish(run, outcome)

    def _finish(self, run: _Run, outcome: RunOutcome) -> None:
        run.outcome = outcome
        self._persist(run, "outcome.json", outcome)
        self._phase(run, "run", "finished", success=outcome.success, score=outcome.score)
        for reply in run.waiters.values():
            reply(outcome)
        run.waiters.clear()

    # --- Specification, evaluation, evolution (the model) ---------------------------------

    def _specify(self, run: _Run) -> GoalSpec:
        request = run.request
        self._phase(run, "specification", "started")
        use_model = (
            request.specify_with_model
            if request.specify_with_model is not None
            else is_complex(request.goal)
        )
        constraints: list[str] = []
        criteria = list(request.criteria)
        source = "message"
        if use_model:
            try:
                text = self._complete(specification_prompt(request.goal))
                made = parse_specification(text)
                constraints = list(made.constraints)
                criteria = criteria or list(made.acceptance_criteria)
                source = "model"
            except (openai.OpenAIError, UnderstudyError) as exc:
                log.warning("specification_failed", run_id=run.run_id, error=repr(exc))
        spec = GoalSpec(
            goal=request.goal,
            original_request=request.goal,
            constraints=constraints,
            acceptance_criteria=criteria or [request.goal],
            workspace=run.workspace,
        )
        self._phase(
            run, "specification", "finished", source=source, criteria=spec.acceptance_criteria
        )
        return spec

    def _evaluate(
        self, run: _Run, spec: GoalSpec, result: AgentResult
    ) -> tuple[float, list[str], str]:
        self._phase(run, "evaluation", "started")
        files = {path: _read(path) for path in result.files}
        try:
            judged = parse_evaluation(
                self._complete(
                    evaluation_prompt(spec.goal, spec.acceptance_criteria, result.output, files)
                )
            )
            score, unmet, feedback = judged.score, list(judged.unmet), judged.feedback
        except (openai.OpenAIError, UnderstudyError) as exc:
            score, unmet, feedback = 0.0, list(spec.acceptance_criteria), f"not evaluated: {exc}"
        if not result.success:
            score = min(score, 0.0)
        self._phase(run, "evaluation", "finished", score=score, unmet=unmet)
        return score, unmet, feedback

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

    def _complete(self, prompt: str) -> str:
        client = openai.OpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=2, timeout=60.0
        )
        response = client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}]
        )
        return response.choices[0].message.content or ""

    # --- The lifecycle of one agent run ---------------------------------------------------

    def _lifecycle(self, run: _Run, spec: GoalSpec, suffix: str) -> Flow:
        generation = run.generation = run.generation + 1
        name = f"{run.run_id}-{suffix}"  # the agent's card name; its access subject is its path
        info = yield Call(self.agents_path, StartChild(args={"name": name}))
        assert isinstance(info, ChildInfo)  # noqa: S101 - the supervisor's answer
        child_id, path = info.id, f"{self.agents_path}/{info.id}"
        run.executing[generation] = (path, None, name)
        self._phase(run, "execution", "progress", step="agent_started", agent=path)
        task_id: str | None = None
        if run.record is not None:
            try:
                yield Call(
                    self.runs_path,
                    AttachAgent(run_id=run.record.id, owner=run.request.owner, agent_path=path),
                )
            except UnderstudyError as exc:
                log.warning("agent_not_attached", run_id=run.run_id, error=str(exc))
        try:
            skills = [
                AgentSkill(id=tag, name=tag, description=f"can do {tag}", tags=[tag])
                for tag in infer_capabilities(spec.goal)
            ]
            card = AgentCard(
                name=name, description=spec.goal[:300], version="1.0", path=path, skills=skills
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
                self.scheduler_path, SubmitTask(description=spec.goal[:500], agent=path)
            )
            assert isinstance(task, TaskInfo)  # noqa: S101 - the scheduler's answer
            task_id = task.id
            yield Call(self.scheduler_path, StartTask(task_id=task_id))
            run.executing[generation] = (path, task_id, name)
            self._arm(run, generation)
            # The agent's own time limit is a backstop: this lifecycle kills it first.
            limits = AgentLimits(
                token_budget=run.request.token_budget, max_execution_time=run.max_time * 1.5 + 1.0
            )
            result = yield Call(
                path,
                RunGoal(run_id=run.run_id, spec=spec, limits=limits, progress_to=self.path),
                timeout=None,
            )
            assert isinstance(result, AgentResult)  # noqa: S101 - the agent's answer
        except UnderstudyError as exc:
            why = (
                "maximum execution time exceeded"
                if generation in run.timed_out
                else f"the agent failed: {exc}"
            )
            result = AgentResult(run_id=run.run_id, agent=path, success=False, error=why)
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
        yield from self._cleanup(run, generation, name, child_id, task_id, succeeded=result.success)
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

    def _arm(self, run: _Run, generation: int) -> None:
        self._disarm(run, generation)
        run.timers[generation] = self.call_later(
            run.max_time, _RunTimer(run_id=run.run_id, generation=generation)
        )

    def _disarm(self, run: _Run, generation: int) -> None:
        token = run.timers.pop(generation, None)
        if token is not None:
            self.cancel_call(token)

    def _on_timer(self, timer: _RunTimer) -> None:
        run = self.runs.get(timer.run_id)
        if run is None or timer.generation not in run.executing:
            return
        path, task_id, name = run.executing[timer.generation]
        run.timed_out.add(timer.generation)
        self._phase(
            run,
            "execution",
            "progress",
            step="timed_out",
            agent=path,
            max_execution_time=run.max_time,
        )
        self.run_flow(self._kill(run, path, task_id, name))

    def _kill(self, run: _Run, path: str, task_id: str | None, name: str) -> Flow:
        if task_id is not None:
            try:
                yield Call(
                    self.scheduler_path,
                    TimeOutTask(
                        task_id=task_id,
                        reason=(f"maximum execution time of {run.max_time} s exceeded"),
                    ),
                )
            except UnderstudyError as exc:
                log.warning("time_out_task_failed", run_id=run.run_id, error=str(exc))
        try:
            yield Call(self.registry_path, UnregisterAgent(name=name))
        except UnderstudyError:
            pass
        try:
            yield Call(self.agents_path, TerminateChild(child_id=path.rsplit("/", 1)[-1]))
        except UnderstudyError as exc:
            log.warning("agent_kill_failed", run_id=run.run_id, error=str(exc))

    # --- Parallel subtasks --------------------------------------------------------------------

    def _parallel(self, run: _Run, spec: GoalSpec, subtasks: list[str]) -> Flow:
        self._phase(run, "delegation", "started", subtasks=subtasks)
        outcomes = yield All([self._subtask(run, spec, i, text) for i, text in enumerate(subtasks)])
        results = [
            o
            if isinstance(o, AgentResult)
            else AgentResult(run_id=run.run_id, agent="", success=False, error=repr(o))
            for o in outcomes
        ]
        self._phase(run, "delegation", "finished", successes=[r.success for r in results])
        return results

    def _subtask(self, run: _Run, spec: GoalSpec, index: int, text: str) -> Flow:
        sub = spec.model_copy(update={"goal": text, "acceptance_criteria": [text]})
        found = yield Call(
            self.registry_path, FindAgents(skill_tag=run.request.capability, status="available")
        )
        delegates = (
            [c for c in found.cards if not c.name.startswith(run.run_id)]
            if isinstance(found, AgentsFound)
            else []
        )
        for attempt in range(self.delegate_tries if delegates else 0):
            target = delegates[attempt % len(delegates)]
            if self.breaker.allow():
                try:
                    result = yield Call(
                        target.path,
                        RunGoal(
                            run_id=f"{run.run_id}.{index}",
                            spec=sub,
                            limits=AgentLimits(max_execution_time=run.max_time),
                        ),
                        timeout=run.max_time,
                    )
                    if isinstance(result, AgentResult) and result.success:
                        self.breaker.record_success()
                        self._phase(
                            run,
                            "delegation",
                            "progress",
                            subtask=index,
                            delegate=target.path,
                            attempt=attempt,
                            success=True,
                        )
                        return result
                    error = result.error if isinstance(result, AgentResult) else "no result"
                except UnderstudyError as exc:
                    error = str(exc)
                self.breaker.record_failure()
            else:
                error = "circuit breaker open"
            self._phase(
                run,
                "delegation",
                "progress",
                subtask=index,
                delegate=target.path,
                attempt=attempt,
                success=False,
                error=error,
            )
            if attempt + 1 < self.delegate_tries:
                yield Sleep(
                    backoff_delay(attempt, base=DELEGATE_BACKOFF[0], cap=DELEGATE_BACKOFF[1])
                )
        self._phase(run, "delegation", "progress", subtask=index, fallback="direct")
        result = yield from self._lifecycle(run, sub, f"s{index}")
        return result

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
