"""The scheduler's state machine: pure, no Thespian, no storage, no clock.

``TaskBook`` holds every task (a ``protocols.scheduler.TaskInfo``) and applies the commands of
the scheduler protocol to them. Every method that changes something returns the tasks it
changed, in their new state, so that the caller can journal exactly those; a method that
refuses raises ``TaskError`` *before* changing anything, so a refused command leaves the book
as it was. Time is always passed in (``now``, epoch seconds): the book never reads a clock.

Transitions (anything else is ``InvalidTransition``)::

    submit          -> pending
    start / next    pending -> running
    complete        running -> completed
    fail            running -> failed
    reap            running -> failed        (the task's agent exited after the task started)
    timeout         running -> timed_out     (now >= deadline)
    cancel          pending | running -> cancelled
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from protocols.scheduler import (
    FINAL_STATES,
    PRIORITIES,
    TASK_STATES,
    Priority,
    SubmitTask,
    TaskInfo,
    TaskState,
)

PRIORITY_RANK: dict[Priority, int] = {p: rank for rank, p in enumerate(PRIORITIES)}
"""0 for the most urgent priority."""

_FROM: dict[str, tuple[TaskState, ...]] = {
    "StartTask": ("pending",),
    "NextTask": ("pending",),
    "CompleteTask": ("running",),
    "FailTask": ("running",),
    "TimeOutTask": ("running",),
    "CancelTask": ("pending", "running"),
}


class TaskError(Exception):
    """A command was refused; ``error`` is the ErrorReply's error name.

    Args:
        error: ``UnknownTask``, ``InvalidTransition``, ``DuplicateTask``, ``AgentMismatch``
            or ``InvalidResult``.
        message: what was wrong, naming the task (and its state and the command).
    """

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        self.message = message
        super().__init__(f"{error}: {message}")


def agent_under(agent: str | None, path: str) -> bool:
    """Return True if ``agent`` is the actor at ``path`` or lives below it in the tree."""
    return agent is not None and (agent == path or agent.startswith(path + "/"))


def is_json_value(value: Any) -> bool:
    """Return True if ``value`` is plain JSON (what the journal can store and give back equal)."""
    try:
        return bool(json.loads(json.dumps(value, allow_nan=False)) == value)
    except (TypeError, ValueError, RecursionError):
        return False


def queue_key(task: TaskInfo) -> tuple[int, int]:
    """Order in which pending tasks are handed out: by priority, then submission order."""
    return PRIORITY_RANK[task.priority], task.seq


class TaskBook:
    """Every task the scheduler knows, and the transitions between their states.

    Args:
        tasks: tasks to start from (e.g. loaded from the journal).
    """

    def __init__(self, tasks: Iterable[TaskInfo] = ()) -> None:
        self._tasks: dict[str, TaskInfo] = {}
        self._pending: dict[str, TaskInfo] = {}
        self._running: dict[str, TaskInfo] = {}
        self._next_seq = 1
        for task in sorted(tasks, key=lambda t: t.seq):
            self._put(task)
            self._next_seq = max(self._next_seq, task.seq + 1)

    # --- Queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def get(self, task_id: str) -> TaskInfo:
        """Return the task ``task_id``.

        Raises:
            TaskError: UnknownTask.
        """
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskError("UnknownTask", f"no task with id {task_id!r}")
        return task

    def tasks(
        self,
        *,
        state: TaskState | None = None,
        agent: str | None = None,
        priority: Priority | None = None,
    ) -> list[TaskInfo]:
        """Return the tasks matching every given filter, in submission order."""
        return [
            t
            for t in self._tasks.values()  # dicts keep insertion order: submission order
            if (state is None or t.state == state)
            and (agent is None or t.agent == agent)
            and (priority is None or t.priority == priority)
        ]

    def statistics(self) -> dict[str, int]:
        """Return the number of tasks per state (every state present) and ``total``."""
        counts = Counter(t.state for t in self._tasks.values())
        stats: dict[str, int] = {state: counts.get(state, 0) for state in TASK_STATES}
        stats["total"] = len(self._tasks)
        return stats

    def running(self) -> list[TaskInfo]:
        """Return the running tasks."""
        return list(self._running.values())

    def next_deadline(self) -> float | None:
        """Return the earliest deadline of a running task, or None if none has one."""
        deadlines = [t.deadline for t in self._running.values() if t.deadline is not None]
        return min(deadlines, default=None)

    def peek(self, agent: str | None = None) -> TaskInfo | None:
        """Return the task ``next_task(agent)`` would hand out, without starting it."""
        candidates = [
            t
            for t in self._pending.values()
            if agent is None or t.agent is None or t.agent == agent
        ]
        return min(candidates, key=queue_key, default=None)

    # --- Commands ------------------------------------------------------------------------------

    def submit(self, command: SubmitTask, now: float) -> TaskInfo:
        """Add a pending task.

        Raises:
            TaskError: DuplicateTask, when ``command.task_id`` is taken.
        """
        seq = self._next_seq
        task_id = command.task_id if command.task_id is not None else f"task-{seq}"
        if task_id in self._tasks:
            raise TaskError("DuplicateTask", f"a task with id {task_id!r} already exists")
        task = TaskInfo(
            id=task_id,
            seq=seq,
            description=command.description,
            priority=command.priority,
            agent=command.agent,
            state="pending",
            deadline=command.deadline,
            max_duration=command.max_duration,
            created_at=now,
        )
        self._next_seq = seq + 1
        self._put(task)
        return task

    def start(self, task_id: str, now: float, *, agent: str | None = None) -> TaskInfo:
        """Start a pending task, assigning it to ``agent`` if it has no agent yet.

        Raises:
            TaskError: UnknownTask, InvalidTransition, or AgentMismatch (the task belongs to
                another agent).
        """
        task = self._check("StartTask", task_id)
        if agent is not None and task.agent is not None and task.agent != agent:
            raise TaskError(
                "AgentMismatch",
                f"StartTask for agent {agent!r}: task {task_id!r} is assigned to {task.agent!r}",
            )
        return self._start(task, now, agent)

    def next_task(self, now: float, *, agent: str | None = None) -> TaskInfo | None:
        """Start and return the next pending task (see ``peek``), or None if there is none."""
        task = self.peek(agent)
        if task is None:
            return None
        return self._start(task, now, agent)

    def complete(self, task_id: str, now: float, result: Any = None) -> TaskInfo:
        """Mark a running task completed with ``result`` (a JSON value).

        Raises:
            TaskError: UnknownTask, InvalidTransition, or InvalidResult (``result`` is not a
                JSON value that survives a round trip: bytes, NaN, infinity ...).
        """
        task = self._check("CompleteTask", task_id)
        if not is_json_value(result):
            detail = f"the result is not a JSON value: {result!r:.80}"
            raise TaskError("InvalidResult", f"CompleteTask for task {task_id!r}: {detail}")
        return self._finish(task, "completed", now, result=result)

    def fail(self, task_id: str, now: float, reason: str) -> TaskInfo:
        """Mark a running task failed.

        Raises:
            TaskError: UnknownTask or InvalidTransition.
        """
        task = self._check("FailTask", task_id)
        return self._finish(task, "failed", now, reason=reason)

    def time_out(self, task_id: str, now: float, reason: str) -> TaskInfo:
        """Mark a running task timed_out (its runner gave up on it: a maximum execution time
        that the caller enforces, and may change while the task runs).

        Raises:
            TaskError: UnknownTask or InvalidTransition.
        """
        task = self._check("TimeOutTask", task_id)
        return self._finish(task, "timed_out", now, reason=reason)

    def cancel(self, task_id: str, now: float, reason: str = "cancelled") -> TaskInfo:
        """Cancel a pending or running task.

        Raises:
            TaskError: UnknownTask or InvalidTransition.
        """
        task = self._check("CancelTask", task_id)
        return self._finish(task, "cancelled", now, reason=reason)

    def sweep(self, now: float) -> list[TaskInfo]:
        """Time out every running task whose deadline is at or before ``now``."""
        overdue = [
            t for t in self._running.values() if t.deadline is not None and t.deadline <= now
        ]
        return [
            self._finish(t, "timed_out", now, reason=f"deadline {t.deadline} passed")
            for t in sorted(overdue, key=lambda t: t.seq)
        ]

    def reap(self, path: str, reason: str, exited_at: float, now: float) -> list[TaskInfo]:
        """Fail the running tasks of the agent at (or below) ``path`` that exited at ``exited_at``.

        Only tasks started no later than ``exited_at`` are failed: an exit before a task
        started belongs to an earlier incarnation of the agent.
        """
        zombies = [
            t
            for t in self._running.values()
            if agent_under(t.agent, path) and t.started_at is not None and t.started_at <= exited_at
        ]
        return [
            self._finish(t, "failed", now, reason=f"agent {t.agent} exited: {reason}")
            for t in sorted(zombies, key=lambda t: t.seq)
        ]

    # --- Internals -----------------------------------------------------------------------------

    def _check(self, command: str, task_id: str) -> TaskInfo:
        task = self.get(task_id)
        allowed = _FROM[command]
        if task.state not in allowed:
            raise TaskError(
                "InvalidTransition",
                f"{command} does not apply to task {task_id!r}: it is {task.state} "
                f"(allowed from {' or '.join(allowed)})",
            )
        return task

    def _start(self, task: TaskInfo, now: float, agent: str | None) -> TaskInfo:
        deadline = task.deadline
        if task.max_duration is not None:
            relative = now + task.max_duration
            deadline = relative if deadline is None else min(deadline, relative)
        started = task.model_copy(
            update={
                "state": "running",
                "started_at": now,
                "deadline": deadline,
                "agent": task.agent if task.agent is not None else agent,
            }
        )
        self._put(started)
        return started

    def _finish(
        self,
        task: TaskInfo,
        state: TaskState,
        now: float,
        *,
        result: Any = None,
        reason: str | None = None,
    ) -> TaskInfo:
        finished = task.model_copy(
            update={
                "state": state,
                "finished_at": now,
                "result": result,
                "reason": reason,
            }
        )
        self._put(finished)
        return finished

    def _put(self, task: TaskInfo) -> None:
        self._tasks[task.id] = task
        self._pending.pop(task.id, None)
        self._running.pop(task.id, None)
        if task.state == "pending":
            self._pending[task.id] = task
        elif task.state == "running":
            self._running[task.id] = task
        else:
            assert task.state in FINAL_STATES  # noqa: S101 - the states are closed


__all__ = [
    "PRIORITY_RANK",
    "TaskBook",
    "TaskError",
    "agent_under",
    "is_json_value",
    "queue_key",
]
