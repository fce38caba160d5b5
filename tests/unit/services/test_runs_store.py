"""The run manager's SQLite store: round trips, the terminations outbox, atomic commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.services.runs import RunStore, StoreError
from actors.services.runs_book import RunBook

T0 = 1_000.0


def sample_book() -> RunBook:
    book = RunBook()
    a = book.create("alice", "a", T0, agents=["root/agents/agent-1"])
    b = book.create("alice", "b", T0 + 1, parent=a.id)
    book.complete(b.id, "alice", 1, {"score": 0.5, "items": ["x", None]}, T0 + 2)
    c = book.create("bob", "c", T0 + 3)
    book.fail(c.id, "bob", 1, "tool error", T0 + 4)
    book.resume(c.id, "bob", T0 + 5)
    return book


def test_runs_survive_closing_and_reopening_the_store(tmp_path: Path) -> None:
    book = sample_book()
    store = RunStore(tmp_path / "runs.db")
    store.commit(book.all_runs())
    store.close()

    reopened = RunStore(tmp_path / "runs.db")

    assert book.all_runs() == reopened.load_runs()
    assert "wal" == reopened.journal_mode


def test_the_terminations_outbox_keeps_agents_until_they_are_confirmed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")

    store.commit([], terminate=["root/agents/a", "root/agents/b", "root/agents/a"])
    store.commit([], terminated=["root/agents/a"])
    store.close()

    assert ["root/agents/b"] == RunStore(tmp_path / "runs.db").pending_terminations()


def test_a_failed_commit_writes_nothing(tmp_path: Path) -> None:
    book = sample_book()
    store = RunStore(tmp_path / "runs.db")
    good = book.all_runs()[0]
    bad = good.model_copy(update={"id": "run-9", "seq": 9, "result": float("nan")})

    with pytest.raises(ValueError, match="JSON"):
        store.commit([good, bad], terminate=["root/agents/a"])

    assert [] == store.load_runs()
    assert [] == store.pending_terminations()


def test_a_store_with_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute("PRAGMA user_version=7")
    db.close()

    with pytest.raises(StoreError, match="version 7"):
        RunStore(tmp_path / "runs.db")


def test_synchronous_must_be_normal_or_full(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OFF"):
        RunStore(tmp_path / "runs.db", synchronous="OFF")
