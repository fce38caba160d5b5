"""The one way Understudy's services open their SQLite stores: WAL, a chosen ``synchronous``,
a versioned schema, and explicit ``BEGIN IMMEDIATE ... COMMIT`` transactions.

``synchronous=NORMAL`` in WAL mode keeps every committed transaction through a SIGKILL of the
process (the commit's ``write`` is in the page cache); ``FULL`` also survives power loss.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "open_store",
    "transaction",
]


def open_store(
    path: Path,
    *,
    synchronous: str,
    schema: str,
    version: int,
    what: str,
    error: type[Exception],
) -> sqlite3.Connection:
    """Open (creating if needed) the store at ``path`` with ``schema`` at ``version``.

    Raises:
        ValueError: ``synchronous`` is neither NORMAL nor FULL.
        error: the file holds another schema version (``what`` names the store).
    """
    if synchronous not in ("NORMAL", "FULL"):
        msg = f"synchronous must be NORMAL or FULL, got {synchronous!r}"
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)  # explicit transactions only
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=5000")
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found not in (0, version):
        db.close()
        msg = f"{path} has {what} schema version {found}, expected {version}"
        raise error(msg)
    with transaction(db):
        for statement in filter(str.strip, schema.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={version}")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
