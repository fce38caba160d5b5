"""The scheduler protocol: tasks, their life cycle, and the commands that move them.

Life cycle (a task never leaves a final state)::

    pending --StartTask / NextTask--> running --CompleteTask--> completed
       |                                 |------FailTask------> failed     (also: its agent exited)
       |                                 |------deadline------> timed_out
       +----------CancelTask-------------+------CancelTask----> cancelled

Deadlines
    ``SubmitTask.deadline`` is an absolute time in epoch seconds (``time.time()``);
    ``SubmitTask.max_duration`` is relative: seconds from the moment the task starts. A task
    with both gets the earlier of the two when it starts. Only a *running* task times out: a
    pending task whose deadline has passed stays pending and times out as soon as it starts.

Agents
    ``agent`` is the path of the agent's actor in the tree (``root/agents/a1``). When that
    actor (or a supervisor above it) exits while the task runs, the task fails with
    ``"agent <path> exited: <reason>"`` and the reap is written to the audit log.

NextTask
    hands out the pending task with the highest priority (critical > high > normal > low),
    oldest first within a priority, AND starts it in the same transaction, so two callers never
    get the same task. ``NextTask(agent=...)`` considers the tasks assigned to that agent or to
    no agent, and assigns the task it hands out to that agent.

Errors (``ErrorReply.error``): ``UnknownTask`` (no task with that id), ``InvalidTransition``
(the command does not apply to the task's state; the message names the command, the task and
its state; nothing changes), ``DuplicateTask`` (SubmitTask with an id that exists),
``AgentMismatch`` (StartTask naming another agent than the task's), ``InvalidResult``
(CompleteTask with a result that is not plain JSON), ``UnexpectedMessage``.

Durability: a reply to a command is sent only after the command's changes are committed to
the scheduler's SQLite journal (``<state_dir>/scheduler.db``), so an acknowledged command
survives a SIGKILL of the scheduler; a command whose ask failed was applied entirely or not
at all.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from protocols._base import Message

Priority = Literal["critical", "high", "normal", "low"]
TaskState = Literal["pending", "running", "completed", "failed", "cancelled", "timed_out"]

PRIORITIES: tuple[Priority, ...] = get_args(Priority)
"""Priorities, most urgent first."""

TASK_STATES: tuple[TaskState, ...] = get_args(TaskState)
FINAL_STATES: frozenset[TaskState] = frozenset({"completed", "failed", "cancelled", "timed_out"})

TaskId = Annotated[str, Field(min_length=1, max_length=200)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
EpochSeconds = Annotated[float, Field(allow_inf_nan=False)]

MAX_WAIT = 3600.0
"""The longest WaitTask timeout, in seconds."""


# --- Replies --------------------------------------------------------------------------------


class TaskInfo(Message):
    """One task as the scheduler knows it (the reply to most commands).

    ``seq`` numbers tasks in submission order. ``deadline`` is absolute (epoch seconds): the
    submitted one, and from the start on the earlier of it and ``started_at + max_duration``.
    Times are epoch seconds. ``result`` is set by CompleteTask; ``reason`` says why a task
    failed, was cancelled or timed out.
    """

    kind: Literal["scheduler.task_info"] = "scheduler.task_info"
    id: TaskId
    seq: int
    description: str
    priority: Priority
    agent: str | None = None
    state: TaskState
    deadline: EpochSeconds | None = None
    max_duration: Seconds | None = None
    created_at: EpochSeconds
    started_at: EpochSeconds | None = None
    finished_at: EpochSeconds | None = None
    result: Any = None
    reason: str | None = None


class Tasks(Message):
    """The reply to ListTasks, in submission order."""

    kind: Literal["scheduler.tasks"] = "scheduler.tasks"
    tasks: list[TaskInfo]


class NoPendingTask(Message):
    """The reply to NextTask when no pending task fits."""

    kind: Literal["scheduler.no_pending_task"] = "scheduler.no_pending_task"
    agent: str | None = None


class SchedulerStatistics(Message):
    """How many tasks are in each state (the reply to GetStatistics)."""

    kind: Literal["scheduler.statistics"] = "scheduler.statistics"
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    total: int = 0

    def summary(self) -> str:
        """Return one line for ``understudy status``: the total, then each non-empty state."""
        counts = [
            f"{getattr(self, state)} {state}" for state in TASK_STATES if getattr(self, state)
        ]
        return f"{self.total} tasks" + (f" ({', '.join(counts)})" if counts else "")


# --- Commands -------------------------------------------------------------------------------


class SubmitTask(Message):
    """Add a pending task; the reply is its TaskInfo.

    ``task_id`` lets the caller choose the id (a retried submission then gets DuplicateTask
    instead of a second task); without it the scheduler names the task ``task-<seq>``.
    """

    kind: Literal["scheduler.submit_task"] = "scheduler.submit_task"
    description: str
    priority: Priority = "normal"
    agent: str | None = None
    deadline: EpochSeconds | None = None
    max_duration: Seconds | None = None
    task_id: TaskId | None = None


class StartTask(Message):
    """Start a pending task (assigning it to ``agent`` if it has none); replies TaskInfo."""

    kind: Literal["scheduler.start_task"] = "scheduler.start_task"
    task_id: TaskId
    agent: str | None = None


class CompleteTask(Message):
    """Mark a running task completed with ``result``; replies TaskInfo."""

    kind: Literal["scheduler.complete_task"] = "scheduler.complete_task"
    task_id: TaskId
    result: Any = None


class FailTask(Message):
    """Mark a running task failed with ``reason``; replies TaskInfo."""

    kind: Literal["scheduler.fail_task"] = "scheduler.fail_task"
    task_id: TaskId
    reason: str


class TimeOutTask(Message):
    """Mark a running task timed_out: its runner enforced a maximum execution time."""

    kind: Literal["scheduler.time_out_task"] = "scheduler.time_out_task"
    task_id: TaskId
    reason: str = "maximum execution time exceeded"


class CancelTask(Message):
    """Cancel a pending or running task; replies TaskInfo."""

    kind: Literal["scheduler.cancel_task"] = "scheduler.cancel_task"
    task_id: TaskId
    reason: str = "cancelled"


class GetTask(Message):
    """Ask for one task; replies TaskInfo."""

    kind: Literal["scheduler.get_task"] = "scheduler.get_task"
    task_id: TaskId


class WaitTask(Message):
    """Reply with the task's TaskInfo once it is in a final state (or when ``timeout`` passes).

    After ``timeout`` seconds the reply shows the task in whatever state it is then. Waits do
    not survive a restart of the scheduler.
    """

    kind: Literal["scheduler.wait_task"] = "scheduler.wait_task"
    task_id: TaskId
    timeout: Annotated[float, Field(gt=0, le=MAX_WAIT)] = 30.0


class ListTasks(Message):
    """List tasks, optionally only those in ``state``, of ``agent``, with ``priority``."""

    kind: Literal["scheduler.list_tasks"] = "scheduler.list_tasks"
    state: TaskState | None = None
    agent: str | None = None
    priority: Priority | None = None


class NextTask(Message):
    """Hand out AND start the next pending task (see the module doc).

    Replies with the started task's TaskInfo, or NoPendingTask.
    """

    kind: Literal["scheduler.next_task"] = "scheduler.next_task"
    agent: str | None = None


class GetStatistics(Message):
    """Ask for SchedulerStatistics."""

    kind: Literal["scheduler.get_statistics"] = "scheduler.get_statistics"


SchedulerCommand = (
    SubmitTask
    | StartTask
    | CompleteTask
    | FailTask
    | CancelTask
    | GetTask
    | WaitTask
    | ListTasks
    | NextTask
    | GetStatistics
)


# --- Between the scheduler and itself -------------------------------------------------------


class _Tick(Message):
    """Scheduler -> itself (a timer): time out the running tasks whose deadline has passed."""

    kind: Literal["_scheduler.tick"] = "_scheduler.tick"


class _WaitExpired(Message):
    """Scheduler -> itself (a timer): answer the WaitTask numbered ``waiter``."""

    kind: Literal["_scheduler.wait_expired"] = "_scheduler.wait_expired"
    waiter: int


class _RetryAudit(Message):
    """Scheduler -> itself (a timer): send the audit records not yet acknowledged again."""

    kind: Literal["_scheduler.retry_audit"] = "_scheduler.retry_audit"


__all__ = [
    "FINAL_STATES",
    "PRIORITIES",
    "TASK_STATES",
    "CancelTask",
    "CompleteTask",
    "FailTask",
    "GetStatistics",
    "GetTask",
    "ListTasks",
    "NextTask",
    "NoPendingTask",
    "Priority",
    "SchedulerCommand",
    "SchedulerStatistics",
    "StartTask",
    "SubmitTask",
    "TaskInfo",
    "TaskState",
    "Tasks",
    "TimeOutTask",
    "WaitTask",
]
