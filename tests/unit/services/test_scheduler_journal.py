"""The scheduler's SQLite journal: settings, commits, atomicity, the audit outbox."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from actors.services.scheduler_journal import Journal, JournalError
from actors.services.scheduler_tasks import TaskBook
from protocols.scheduler import SubmitTask, TaskInfo


def tasks(n: int) -> list[TaskInfo]:
    book = TaskBook()
    return [book.submit(SubmitTask(description=f"d{i}", priority="high"), 1.0) for i in range(n)]


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_the_journal_uses_wal_with_the_chosen_synchronous_level(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    journal = Journal(tmp_path / "s.db", synchronous=synchronous)  # type: ignore[arg-type]

    assert "wal" == journal.journal_mode
    assert level == journal.synchronous
    journal.close()


def test_the_default_is_normal_and_other_levels_are_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s.db")
    assert 1 == journal.synchronous
    journal.close()

    with pytest.raises(ValueError, match="synchronous must be NORMAL or FULL, got 'OFF'"):
        Journal(tmp_path / "t.db", synchronous="OFF")  # type: ignore[arg-type]


def test_committed_tasks_come_back_from_a_new_connection_with_their_history(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "deep" / "s.db")
    first, second = tasks(2)
    started = first.model_copy(update={"state": "running", "started_at": 2.0})
    journal.commit("SubmitTask", [("SubmitTask", first), ("SubmitTask", second)], 1.0)
    journal.commit("StartTask", [("StartTask", started)], 2.0)
    journal.close()

    reopened = Journal(tmp_path / "deep" / "s.db")

    assert [started, second] == reopened.load_tasks()
    assert [("SubmitTask", "pending"), ("StartTask", "running")] == reopened.history(first.id)
    reopened.close()


def test_a_command_whose_transaction_fails_leaves_nothing_of_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s.db")
    good, bad = tasks(2)
    unstorable = bad.model_copy(update={"result": math.nan})

    with pytest.raises(ValueError, match="JSON"):
        journal.commit(
            "SubmitTask",
            [("SubmitTask", good), ("SubmitTask", unstorable)],
            1.0,
            audit=[{"actor": "a", "action": "b", "detail": {}}],
        )

    assert [] == journal.load_tasks()
    assert [] == journal.history(good.id)
    assert [] == journal.pending_audit()
    journal.close()


def test_audit_records_wait_in_the_outbox_until_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s.db")
    (task,) = tasks(1)
    record = {"actor": "root/scheduler", "action": "task.reaped", "detail": {"task_id": "x"}}

    ids = journal.commit("Reap", [("Reap", task)], 1.0, audit=[record, record])
    journal.audit_acknowledged(ids[0])
    journal.close()
    reopened = Journal(tmp_path / "s.db")

    assert [(ids[1], record)] == reopened.pending_audit()
    reopened.close()


def test_a_journal_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version=99")
    db.close()

    with pytest.raises(JournalError, match="schema version 99, expected 1"):
        Journal(tmp_path / "s.db")
