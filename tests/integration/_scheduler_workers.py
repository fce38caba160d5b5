"""Workers for the scheduler's tests: a stand-in audit log that records what it is sent."""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from actors import Worker
from actors.services.scheduler_journal import Journal
from actors.services.scheduler_tasks import TaskBook
from protocols import Message
from protocols.access import AppendAudit
from protocols.common import Ok
from protocols.scheduler import SubmitTask


class GetAudits(Message):
    """Reply Audits once at least ``count`` records arrived (or after ``timeout`` seconds)."""

    kind: Literal["test.scheduler.get_audits"] = "test.scheduler.get_audits"
    count: int = 0
    timeout: float = 5.0


class Audits(Message):
    kind: Literal["test.scheduler.audits"] = "test.scheduler.audits"
    records: list[dict[str, Any]]


class _AuditWaitExpired(Message):
    kind: Literal["test.scheduler.audit_wait_expired"] = "test.scheduler.audit_wait_expired"
    waiter: int


class AuditRecorder(Worker):
    """Answers AppendAudit with Ok and keeps the records, as the access manager does."""

    def on_start(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.waiters: dict[int, tuple[int, Callable[[Message], None]]] = {}
        self.ids = itertools.count(1)

    def handle(self, message: Message) -> Message | None:
        if isinstance(message, AppendAudit):
            self.records.append(message.model_dump(mode="json", exclude={"kind"}))
            for waiter, (count, reply) in list(self.waiters.items()):
                if len(self.records) >= count:
                    del self.waiters[waiter]
                    reply(Audits(records=self.records))
            return Ok()
        if isinstance(message, GetAudits):
            if len(self.records) >= message.count:
                return Audits(records=self.records)
            waiter = next(self.ids)
            self.waiters[waiter] = (message.count, self.defer_reply())
            self.call_later(message.timeout, _AuditWaitExpired(waiter=waiter))
            return None
        if isinstance(message, _AuditWaitExpired):
            pending = self.waiters.pop(message.waiter, None)
            if pending is not None:
                pending[1](Audits(records=self.records))
        return None


def journal_writer(db: str, seed: int) -> None:
    """Drive tasks through the journal forever, printing ``<task id> <state>`` after each commit.

    Run as ``python -m tests.integration._scheduler_workers <db> <seed>``; the test SIGKILLs it.
    A printed line is an acknowledgement: its commit returned before the line was written.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not cryptography
    journal = Journal(Path(db))
    book = TaskBook(journal.load_tasks())
    n = 0
    while True:
        now = time.time()
        running = book.tasks(state="running")
        pending = book.tasks(state="pending")
        roll = rng.random()
        if running and roll < 0.4:
            task = rng.choice(running)
            done = (
                book.complete(task.id, now, {"n": n})
                if rng.random() < 0.5
                else book.fail(task.id, now, f"failure {n}")
            )
            changed = [("Finish", done)]
        elif pending and roll < 0.7:
            changed = [("StartTask", book.start(rng.choice(pending).id, now, agent="w"))]
        else:
            n += 1
            changed = [("SubmitTask", book.submit(SubmitTask(description=f"job {n}"), now))]
        journal.commit("step", changed, now)
        for _name, task in changed:
            sys.stdout.write(f"{task.id} {task.state}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    journal_writer(sys.argv[1], int(sys.argv[2]))
