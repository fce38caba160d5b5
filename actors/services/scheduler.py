"""Scheduler: tasks with priorities, deadlines and agents, journalled in SQLite.

The protocol (commands, replies, the life cycle of a task) is ``protocols.scheduler``; the
state machine is ``actors.services.scheduler_tasks.TaskBook`` (pure); the journal is
``actors.services.scheduler_journal``. This
worker wires them to messages, time and supervision events:

    every message   first times out the running tasks whose deadline has passed
    a command       is applied to the book, then ONE SQLite transaction (the timeouts and the
                    command's changes) commits, then the handler returns the reply: whatever
                    was acknowledged survives a SIGKILL (see ``actors.services.scheduler_journal``)
    a deadline      a ``_Tick`` timer (``call_later``) fires at the earliest running deadline
    an agent exit   ``child_exited`` / ``child_terminated`` / ``supervisor_shutdown`` events
                    (subscribed with replay, so exits missed while the scheduler was down are
                    seen after its restart) fail the running tasks of that agent that started
                    before the exit ("reaping"); each reap is sent to the audit log as
                    ``AppendAudit(action="task.reaped")``, kept in the journal's outbox until
                    the audit log answers (at least once; ``detail.audit_id`` identifies it)

A refused command (unknown task, invalid transition, ...) gets an ``ErrorReply`` and changes
nothing; the scheduler keeps running. A journal that cannot be written crashes the scheduler:
its supervisor restarts it from the last committed state.

Args (in the topology): ``audit`` (path of the access manager, default
``root/system/access``), ``synchronous`` (``NORMAL``, the default: durable under SIGKILL; or
``FULL``: also under power loss, see ``actors.services.scheduler_journal``), ``db`` (file name
under the state directory, default ``scheduler.db``), ``audit_retry`` (seconds between
retries of unacknowledged audit records, default 5).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from actors.core.worker import Worker
from actors.services.scheduler_journal import Journal
from actors.services.scheduler_tasks import TaskBook, TaskError
from protocols._base import Message
from protocols.access import AppendAudit
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.scheduler import (
    FINAL_STATES,
    CancelTask,
    CompleteTask,
    FailTask,
    GetStatistics,
    GetTask,
    ListTasks,
    NextTask,
    NoPendingTask,
    SchedulerStatistics,
    StartTask,
    SubmitTask,
    TaskInfo,
    Tasks,
    TimeOutTask,
    WaitTask,
    _RetryAudit,
    _Tick,
    _WaitExpired,
)
from protocols.supervision import SupervisionEvent, exited_path

log = structlog.get_logger("understudy.scheduler")

DEFAULT_AUDIT_PATH = "root/system/access"
DEFAULT_DB = "scheduler.db"
DEFAULT_AUDIT_RETRY = 5.0
MAX_TIMER = 3600.0  # a far deadline is reached by re-arming; keeps timer values small

_EVENT_NAMES = {
    "pending": "task_submitted",
    "running": "task_started",
    "completed": "task_completed",
    "failed": "task_failed",
    "cancelled": "task_cancelled",
    "timed_out": "task_timed_out",
}


@dataclass
class _Waiter:
    task_id: str
    reply: Callable[[Message], None]
    timer: int


class Scheduler(Worker):
    """The scheduler worker (``start: actors.services.scheduler:Scheduler``)."""

    _clock: Callable[[], float] = staticmethod(time.time)

    # --- Life cycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Open the journal, reload every task, subscribe to supervision events."""
        self._audit_path = str(self.args.get("audit", DEFAULT_AUDIT_PATH))
        self._audit_retry = float(self.args.get("audit_retry", DEFAULT_AUDIT_RETRY))
        self._journal = Journal(
            self.state_dir / str(self.args.get("db", DEFAULT_DB)),
            synchronous=self.args.get("synchronous", "NORMAL"),
        )
        self._book = TaskBook(self._journal.load_tasks())
        self._tick: tuple[int, float] | None = None  # (timer token, deadline it is for)
        self._waiters: dict[int, _Waiter] = {}
        self._waiter_ids = itertools.count(1)
        self._audit_inflight: dict[int, int] = {}  # request id -> outbox id
        self._audit_sent: set[int] = set()  # outbox ids in flight
        self._audit_timer: int | None = None
        log.info(
            "scheduler_started", actor=self.path, tasks=len(self._book), db=str(self._journal.path)
        )
        self._sweep()
        self._send_audit()
        self.subscribe_events(replay=True)

    def on_stop(self, reason: str) -> None:
        """Close the journal (every command is already committed)."""
        self._journal.close()

    # --- The messages we accept ---------------------------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Answer one command of ``protocols.scheduler`` (or an internal message)."""
        match message:
            case SubmitTask():
                return self._command("SubmitTask", lambda now: [self._book.submit(message, now)])
            case StartTask():
                return self._command(
                    "StartTask",
                    lambda now: [self._book.start(message.task_id, now, agent=message.agent)],
                )
            case CompleteTask():
                return self._command(
                    "CompleteTask",
                    lambda now: [self._book.complete(message.task_id, now, message.result)],
                )
            case FailTask():
                return self._command(
                    "FailTask", lambda now: [self._book.fail(message.task_id, now, message.reason)]
                )
            case TimeOutTask():
                return self._command(
                    "TimeOutTask",
                    lambda now: [self._book.time_out(message.task_id, now, message.reason)],
                )
            case CancelTask():
                return self._command(
                    "CancelTask",
                    lambda now: [self._book.cancel(message.task_id, now, message.reason)],
                )
            case NextTask():
                return self._next_task(message)
            case GetTask():
                return self._read("GetTask", message.task_id)
            case WaitTask():
                return self._wait_task(message)
            case ListTasks():
                self._sweep()
                return Tasks(
                    tasks=self._book.tasks(
                        state=message.state, agent=message.agent, priority=message.priority
                    )
                )
            case GetStatistics():
                self._sweep()
                return SchedulerStatistics(**self._book.statistics())
            case SupervisionEvent():
                self._on_supervision_event(message)
                return None
            case _Tick():
                self._tick = None
                self._sweep()
                return None
            case _WaitExpired():
                self._wait_expired(message.waiter)
                return None
            case _RetryAudit():
                self._audit_timer = None
                self._send_audit()
                return None
            case _:
                log.warning("unexpected_message", actor=self.path, kind=message.kind)
                return ErrorReply(
                    error=ErrorName.UNEXPECTED_MESSAGE,
                    message=f"the scheduler does not handle {message.kind!r}",
                )

    # --- One unit of work: sweep, change, one transaction ----------------------------------

    def _apply(
        self,
        command: str,
        change: Callable[[float], list[TaskInfo]],
        *,
        audit: Callable[[list[TaskInfo]], list[dict[str, Any]]] | None = None,
    ) -> list[TaskInfo] | ErrorReply:
        """Time out overdue tasks, apply ``change``, and commit both in ONE transaction.

        Returns the tasks ``change`` changed, or the ErrorReply of its refusal (a refusal
        changes nothing; the timeouts are committed all the same). ``audit`` makes the audit
        records of the changes, committed to the outbox in the same transaction.
        """
        now = self._clock()
        timed_out = self._book.sweep(now)
        refusal: ErrorReply | None = None
        try:
            changed = change(now)
        except TaskError as exc:
            log.info(
                "command_rejected",
                actor=self.path,
                command=command,
                error=exc.error,
                detail=exc.message,
            )
            changed, refusal = [], ErrorReply(error=exc.error, message=exc.message)
        records = audit(changed) if audit is not None else []
        self._journal.commit(
            command,
            [("Timeout", t) for t in timed_out] + [(command, t) for t in changed],
            now,
            audit=records,
        )
        self._after(timed_out + changed, now)
        return refusal if refusal is not None else changed

    def _command(self, command: str, change: Callable[[float], list[TaskInfo]]) -> Message:
        """Apply a command that changes exactly one task; reply with it (or the refusal)."""
        result = self._apply(command, change)
        return result if isinstance(result, ErrorReply) else result[0]

    def _read(self, command: str, task_id: str) -> Message:
        """Reply with the task ``task_id`` (after the sweep), or UnknownTask."""
        self._sweep()
        try:
            return self._book.get(task_id)
        except TaskError as exc:
            log.info(
                "command_rejected",
                actor=self.path,
                command=command,
                error=exc.error,
                detail=exc.message,
            )
            return ErrorReply(error=exc.error, message=exc.message)

    def _sweep(self) -> None:
        """Time out the running tasks whose deadline has passed (and commit that)."""
        self._apply("Sweep", lambda _now: [])

    def _after(self, changed: list[TaskInfo], now: float) -> None:
        """Log the committed changes, answer waiters of finished tasks, re-arm the timer."""
        for task in changed:
            log.info(
                _EVENT_NAMES[task.state],
                actor=self.path,
                task_id=task.id,
                agent=task.agent,
                priority=task.priority,
                reason=task.reason,
            )
            if task.state in FINAL_STATES:
                self._answer_waiters(task)
        self._arm_tick(now)

    def _arm_tick(self, now: float) -> None:
        deadline = self._book.next_deadline()
        if self._tick is not None:
            if self._tick[1] == deadline:
                return
            self.cancel_call(self._tick[0])
            self._tick = None
        if deadline is not None:
            delay = min(max(0.0, deadline - now), MAX_TIMER)
            self._tick = (self.call_later(delay, _Tick()), deadline)

    # --- NextTask and WaitTask ---------------------------------------------------------------

    def _next_task(self, message: NextTask) -> Message:
        def change(now: float) -> list[TaskInfo]:
            task = self._book.next_task(now, agent=message.agent)
            return [task] if task is not None else []

        started = self._apply("NextTask", change)
        if isinstance(started, ErrorReply):
            return started
        return started[0] if started else NoPendingTask(agent=message.agent)

    def _wait_task(self, message: WaitTask) -> Message | None:
        reply = self._read("WaitTask", message.task_id)
        if not isinstance(reply, TaskInfo) or reply.state in FINAL_STATES:
            return reply
        waiter = next(self._waiter_ids)
        timer = self.call_later(message.timeout, _WaitExpired(waiter=waiter))
        self._waiters[waiter] = _Waiter(message.task_id, self.defer_reply(), timer)
        return None

    def _answer_waiters(self, task: TaskInfo) -> None:
        for waiter_id, waiter in list(self._waiters.items()):
            if waiter.task_id == task.id:
                del self._waiters[waiter_id]
                self.cancel_call(waiter.timer)
                waiter.reply(task)

    def _wait_expired(self, waiter_id: int) -> None:
        waiter = self._waiters.pop(waiter_id, None)
        if waiter is not None:
            waiter.reply(self._book.get(waiter.task_id))

    # --- Reaping tasks whose agent exited ------------------------------------------------------

    def _on_supervision_event(self, event: SupervisionEvent) -> None:
        path = exited_path(event)
        if path is None:
            return
        reaped = self._apply(
            "Reap",
            lambda now: self._book.reap(path, event.reason or "exited", event.time, now),
            audit=lambda tasks: [self._audit_record(task, event) for task in tasks],
        )
        if isinstance(reaped, ErrorReply) or not reaped:
            return
        for task in reaped:
            log.warning(
                "task_reaped",
                actor=self.path,
                task_id=task.id,
                agent=task.agent,
                reason=task.reason,
                event_seq=event.seq,
            )
        self._send_audit()

    def _audit_record(self, task: TaskInfo, event: SupervisionEvent) -> dict[str, Any]:
        return {
            "actor": self.path,
            "action": "task.reaped",
            "detail": {
                "task_id": task.id,
                "agent": task.agent,
                "reason": task.reason,
                "exit_reason": event.reason,
                "exited_at": event.time,
                "event_seq": event.seq,
            },
        }

    # --- The audit outbox ----------------------------------------------------------------------

    def _send_audit(self) -> None:
        """Send every outbox record not in flight to the audit log."""
        for outbox_id, record in self._journal.pending_audit():
            if outbox_id in self._audit_sent:
                continue
            message = AppendAudit(
                actor=record["actor"],
                action=record["action"],
                detail={**record["detail"], "audit_id": outbox_id},
            )
            request_id = self.request(self._audit_path, message)
            self._audit_inflight[request_id] = outbox_id
            self._audit_sent.add(outbox_id)

    def on_reply(self, request_id: int, reply: Message) -> None:
        """The audit log acknowledged a record: drop it from the outbox. A failed request (the
        audit log is not there, or exited) keeps the record for a retry."""
        outbox_id = self._audit_inflight.pop(request_id, None)
        if outbox_id is None:
            log.debug("reply_ignored", actor=self.path, kind=reply.kind)
            return
        self._audit_sent.discard(outbox_id)
        if not isinstance(reply, Ok):
            log.warning(
                "audit_not_acknowledged",
                actor=self.path,
                audit_id=outbox_id,
                reply=reply.kind,
                detail=getattr(reply, "message", ""),
            )
            if self._audit_timer is None:
                self._audit_timer = self.call_later(self._audit_retry, _RetryAudit())
            return
        self._journal.audit_acknowledged(outbox_id)
        log.info("audit_acknowledged", actor=self.path, audit_id=outbox_id)

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        """The audit log was not there: retry its records after ``audit_retry`` seconds."""
        details = [getattr(m, "detail", None) for m in messages]
        lost = {d.get("audit_id") for d in details if isinstance(d, dict)}
        for request_id, outbox_id in list(self._audit_inflight.items()):
            if outbox_id in lost:
                del self._audit_inflight[request_id]
                self._audit_sent.discard(outbox_id)
        log.warning(
            "audit_undelivered", actor=self.path, to=path, count=len(messages), reason=reason
        )
        if self._audit_timer is None:
            self._audit_timer = self.call_later(self._audit_retry, _RetryAudit())


__all__ = ["Scheduler"]
