"""Handled marks and sent counts: written as memory stores, read back after the writer is gone."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from actors.core.ledger import Ledger, from_tally
from actors.core.link_marks import (
    _EVENT_INDEX,
    MARK_SLOTS,
    HandledMarks,
    LedgerTally,
    SentCounts,
    marks_path,
    sends_path,
    take_marks,
    take_sends,
    take_tally,
    tally_path,
)
from protocols.ledger import LEDGER_EVENTS


@given(
    st.dictionaries(
        st.integers(1, 2**63 - 1),
        st.tuples(st.integers(1, 10**9), st.integers(0, 512)),
        max_size=50,
    )
)
def test_marks_read_back_from_the_file_are_the_last_written(
    marks: dict[int, tuple[int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as state:
        written = HandledMarks(path=marks_path(state, 1))
        for nonce, (seq, n) in marks.items():
            written.mark(nonce, 1, 1)
            written.mark(nonce, seq, n)

        taken = take_marks(key="not-in-process", state_dir=state, pid=1)

        assert (marks, True) == taken
        assert not marks_path(state, 1).exists()


def test_marks_survive_a_sigkilled_writer(tmp_path: Path) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write marks, say so, wait to be killed
        os.close(read)
        marks = HandledMarks(path=marks_path(tmp_path, os.getpid()))
        marks.mark(7, 3, 2)
        counts = SentCounts(path=sends_path(tmp_path, os.getpid()))
        counts.count("127.0.0.1:9", counts.slot("127.0.0.1:9"), 41)
        os.write(write, b"x")
        signal.pause()
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    assert ({7: (3, 2)}, True) == take_marks(key="", state_dir=tmp_path, pid=pid)
    assert {"127.0.0.1:9": 41} == take_sends(key="", state_dir=tmp_path, pid=pid)


def test_more_senders_than_slots_makes_the_marks_incomplete(tmp_path: Path) -> None:
    marks = HandledMarks(path=marks_path(tmp_path, 2))
    for nonce in range(1, MARK_SLOTS + 2):
        marks.mark(nonce, 1, 1)

    taken = take_marks(key="", state_dir=tmp_path, pid=2)

    assert taken is not None
    assert len(taken[0]) == MARK_SLOTS
    assert taken[1] is False


def test_in_process_marks_and_counts_are_taken_by_key() -> None:
    marks = HandledMarks(key="actor-1")
    marks.mark(5, 2, 9)
    counts = SentCounts(key="actor-1")
    counts.count("other", counts.slot("other"), 3)

    assert ({5: (2, 9)}, True) == take_marks(key="actor-1", state_dir="/nonexistent", pid=None)
    assert {"other": 3} == take_sends(key="actor-1", state_dir="/nonexistent", pid=None)
    assert take_marks(key="actor-1", state_dir="/nonexistent", pid=None) is None


def test_a_missing_file_means_no_marks(tmp_path: Path) -> None:
    assert take_marks(key="", state_dir=tmp_path, pid=12345) is None
    assert {} == take_sends(key="", state_dir=tmp_path, pid=12345)


def test_a_ledger_tally_survives_a_sigkilled_worker_and_becomes_its_snapshot(
    tmp_path: Path,
) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count as a worker would, say so, wait to be killed
        os.close(read)
        ledger = Ledger()
        ledger.keep = LedgerTally(tally_path(tmp_path, os.getpid())).store
        for _ in range(5):
            ledger.count("delivered", "a", "example.ping")
            ledger.count("handled", "a", "example.ping")
        ledger.count("sent", "b", "example.pong", 3)
        os.write(write, b"x")
        signal.pause()
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    tally = take_tally(state_dir=tmp_path, pid=pid)
    assert tally is not None
    snapshot = from_tally("root/w", tally)
    assert (5, 5, 3) == (snapshot.total.handled, snapshot.total.delivered, snapshot.total.sent)
    assert 5 == snapshot.by_kind["example.ping"].handled
    assert not tally_path(tmp_path, pid).exists()


@given(
    st.lists(st.sampled_from(["sent", "handled", "undelivered"]), max_size=200), st.integers(1, 90)
)
def test_a_tally_keeps_every_count_even_past_its_rows(events: list[str], kinds: int) -> None:
    """More kinds than rows share the last row: the totals stay right."""
    with tempfile.TemporaryDirectory() as state:
        ledger = Ledger()
        tally = LedgerTally(tally_path(state, 1))
        ledger.keep = tally.store
        for index, event in enumerate(events):
            ledger.count(event, "link", f"kind.{index % kinds}")  # type: ignore[arg-type]
        kept = take_tally(state_dir=state, pid=1)
        assert kept is not None
        assert ledger.snapshot("p").total == from_tally("p", kept).total


def test_the_tally_keeps_the_ledger_events_in_order() -> None:
    assert list(LEDGER_EVENTS) == list(_EVENT_INDEX)
    assert list(range(len(LEDGER_EVENTS))) == list(_EVENT_INDEX.values())


def test_a_discarded_tally_leaves_nothing_to_take(tmp_path: Path) -> None:
    tally = LedgerTally(tally_path(tmp_path, 1))
    tally.store("k", "sent", 1)
    tally.discard()
    assert take_tally(state_dir=tmp_path, pid=1) is None
