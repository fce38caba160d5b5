"""The scheduler's journal: its tasks in SQLite, one transaction per command.

Why the reply can promise durability
    The scheduler commits a command's transaction *before* its handler returns, and the reply
    is sent only after the handler returns. The database runs in WAL mode: a commit appends
    the changed pages and a commit record to ``scheduler.db-wal`` with ``write()``.

    * SIGKILL (the failure the supervisor repairs) kills the process, not the kernel: data a
      finished ``write()`` handed to the kernel is in the page cache and reaches the file
      whatever happens to the process. So with ``synchronous=NORMAL`` (no fsync at commit) an
      acknowledged command already survives SIGKILL: the next connection rebuilds its index
      from the WAL and sees every committed transaction.
      A transaction interrupted half way has no commit record and is ignored: nothing is
      half applied.
    * Power loss or a kernel crash loses the page cache. Only ``synchronous=FULL`` (fsync of
      the WAL at every commit) keeps an acknowledged command then.

    So ``NORMAL`` is the level that keeps "acknowledged = durable" under SIGKILL, and it is the
    default: the failure Understudy's supervisors repair is a process dying, and FULL costs an
    fsync per command (measured on this project's machine: ~260 commits/s with FULL against
    ~6,800 with NORMAL). A deployment that must also survive power loss sets the worker's
    ``synchronous`` arg to ``FULL``.

Tables
    tasks     the last committed state of every task (one row per task)
    journal   one row per change: when, which command, which task, which new state (history)
    outbox    audit records committed with the change they describe, deleted once the audit
              log acknowledged them (so a reap is audited at least once, even across a kill)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from actors.services._sqlite import open_store, transaction
from protocols.scheduler import TaskInfo

Synchronous = Literal["NORMAL", "FULL"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    description TEXT NOT NULL,
    priority TEXT NOT NULL,
    agent TEXT,
    state TEXT NOT NULL,
    deadline REAL,
    max_duration REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    command TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL
);
"""

_COLUMNS = (
    "id",
    "seq",
    "description",
    "priority",
    "agent",
    "state",
    "deadline",
    "max_duration",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "reason",
)
_UPSERT = (
    f"INSERT OR REPLACE INTO tasks ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant columns
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


class JournalError(Exception):
    """The journal file cannot be used (wrong schema version, not a database)."""


class Journal:
    """The SQLite file behind one scheduler.

    Args:
        path: the database file (created with its directory if missing).
        synchronous: ``NORMAL`` (durable under SIGKILL) or ``FULL`` (also under power loss,
            one fsync per commit); see the module doc.

    Raises:
        JournalError: the file has another schema version.
        sqlite3.Error: the file cannot be opened.
    """

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL") -> None:
        self.path = path
        self._db = open_store(
            path,
            synchronous=synchronous,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            what="journal",
            error=JournalError,
        )

    @property
    def synchronous(self) -> int:
        """SQLite's current ``synchronous`` setting (1 NORMAL, 2 FULL)."""
        value: int = self._db.execute("PRAGMA synchronous").fetchone()[0]
        return value

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``)."""
        value: str = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        return value

    def load_tasks(self) -> list[TaskInfo]:
        """Return every task in its last committed state, in submission order."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM tasks ORDER BY seq"  # noqa: S608 - constant columns
        ).fetchall()
        tasks = []
        for row in rows:
            fields = dict(zip(_COLUMNS, row, strict=True))
            fields["result"] = json.loads(fields["result"])
            tasks.append(TaskInfo.model_validate(fields))
        return tasks

    def pending_audit(self) -> list[tuple[int, dict[str, Any]]]:
        """Return the audit records not yet acknowledged, oldest first, with their ids."""
        rows = self._db.execute("SELECT id, record FROM outbox ORDER BY id").fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def history(self, task_id: str) -> list[tuple[str, str]]:
        """Return ``(command, state)`` for each journalled change of ``task_id``, in order."""
        rows = self._db.execute(
            "SELECT command, state FROM journal WHERE task_id = ? ORDER BY n", (task_id,)
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def commit(
        self,
        command: str,
        changed: Sequence[tuple[str, TaskInfo]],
        now: float,
        *,
        audit: Sequence[dict[str, Any]] = (),
    ) -> list[int]:
        """Write ``changed`` tasks and ``audit`` records in ONE transaction.

        Each change carries the name of the command that made it; ``command`` names the unit
        of work when a change carries no name. Returns the outbox ids of the audit records.

        Raises:
            sqlite3.Error: nothing was written.
        """
        if not changed and not audit:
            return []
        ids = []
        with self._transaction():
            for name, task in changed:
                self._db.execute(_UPSERT, _row(task))
                self._db.execute(
                    "INSERT INTO journal (time, command, task_id, state) VALUES (?, ?, ?, ?)",
                    (now, name or command, task.id, task.state),
                )
            for record in audit:
                cursor = self._db.execute(
                    "INSERT INTO outbox (record) VALUES (?)", (json.dumps(record),)
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def audit_acknowledged(self, outbox_id: int) -> None:
        """Forget an audit record the audit log acknowledged."""
        with self._transaction():
            self._db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))

    def close(self) -> None:
        """Close the database (a later Journal on the same file sees every commit)."""
        self._db.close()

    # --- Internals -----------------------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)


def _row(task: TaskInfo) -> tuple[Any, ...]:
    data = task.model_dump(mode="json", exclude={"result"})
    data["result"] = json.dumps(task.result, allow_nan=False)
    return tuple(data[column] for column in _COLUMNS)


__all__ = ["Journal", "JournalError", "Synchronous"]
