"""Handled marks: how far a receiver got with each sender, kept where a SIGKILL cannot erase it.

After each data-path message it handled, a receiver writes ``(sender nonce, seq, n)`` (frames
below ``seq`` handled, and ``n`` messages of frame ``seq``) into a slot of a small file it maps
into memory (``<state_dir>/links/<pid>.marks``). A write to a shared mapping is a memory store:
no system call, and the kernel keeps it when the process is killed. When the receiver's process
is gone, its supervisor reads the file (``take_marks``), removes it, and the guardian passes the
marks to every actor that sent to it, so each sender reports undelivered exactly the messages
that were not handled (``actors.core.link.SendLink.receiver_gone``).

A receiver sharing its supervisor's process (simpleSystemBase) keeps its marks in memory here.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from pathlib import Path

import structlog

__all__ = [
    "MARK_SLOTS",
    "HandledMarks",
    "LedgerTally",
    "Marks",
    "Sends",
    "SentCounts",
    "Tally",
    "marks_path",
    "sends_path",
    "take_marks",
    "take_sends",
    "take_tally",
    "tally_path",
]

log = structlog.get_logger("understudy.link")

MARK_SLOTS = 1024
_HEADER = struct.Struct("<Q")  # 1 when a sender found no free slot (marks then incomplete)
_SLOT = struct.Struct("<QQQ")  # nonce, seq, n
_SIZE = _HEADER.size + MARK_SLOTS * _SLOT.size

Marks = dict[int, tuple[int, int]]
"""Sender nonce -> (seq, n)."""

_IN_PROCESS: dict[str, HandledMarks] = {}


def marks_path(state_dir: str | Path, pid: int) -> Path:
    """The marks file of the actor process ``pid``."""
    return Path(state_dir) / "links" / f"{pid}.marks"


class HandledMarks:
    """One receiver incarnation's handled marks."""

    def __init__(self, *, path: Path | None = None, key: str = "") -> None:
        """Keep marks in the file ``path`` (own process), else in memory under ``key``."""
        self._slots: dict[int, int] = {}
        self._memory: Marks = {}
        self._overflow = False
        self._map: mmap.mmap | None = None
        self._key = key
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, _SIZE)
                self._map = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
        else:
            _IN_PROCESS[key] = self

    def mark(self, nonce: int, seq: int, n: int) -> None:
        """Record that the first ``n`` messages of frame ``seq`` from ``nonce`` were handled."""
        if self._map is None:
            self._memory[nonce] = (seq, n)
            return
        offset = self._slots.get(nonce)
        if offset is None:
            if len(self._slots) >= MARK_SLOTS:
                if not self._overflow:
                    self._overflow = True
                    _HEADER.pack_into(self._map, 0, 1)
                    log.warning("link_marks_full", slots=MARK_SLOTS)
                return
            offset = self._slots[nonce] = _HEADER.size + len(self._slots) * _SLOT.size
        _SLOT.pack_into(self._map, offset, nonce, seq, n)

    def read(self) -> tuple[Marks, bool]:
        """The marks so far, and whether they are complete."""
        if self._map is None:
            return dict(self._memory), True
        return _parse(self._map)


def _parse(buffer: mmap.mmap | bytes) -> tuple[Marks, bool]:
    (overflow,) = _HEADER.unpack_from(buffer, 0)
    marks: Marks = {}
    for index in range(MARK_SLOTS):
        nonce, seq, n = _SLOT.unpack_from(buffer, _HEADER.size + index * _SLOT.size)
        if nonce == 0:
            break
        marks[nonce] = (seq, n)
    return marks, overflow == 0


def _take_file(path: Path, size: int, unreadable: str) -> bytes | None:
    """Read and remove a file a gone process left (None: there is none, or it is not
    ``size`` bytes long, which is logged as ``unreadable``)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    if len(data) != size:
        log.warning(unreadable, path=str(path), size=len(data))
        return None
    return data


def take_marks(*, key: str, state_dir: str | Path, pid: int | None) -> tuple[Marks, bool] | None:
    """Read and remove the marks of a receiver whose process is gone (None: it left none)."""
    held = _IN_PROCESS.pop(key, None)
    if held is not None:
        return held.read()
    if pid is None:
        return None
    data = _take_file(marks_path(state_dir, pid), _SIZE, "link_marks_unreadable")
    return None if data is None else _parse(data)


_SENDS_SLOTS = 256
_KEY = 64
_SEND = struct.Struct(f"<{_KEY}sQ")  # receiver key (utf-8, zero-padded), messages admitted
_SENDS_SIZE = _SENDS_SLOTS * _SEND.size

Sends = dict[str, int]
"""Receiver key -> messages this sender admitted (queued) for it."""

_IN_PROCESS_SENDS: dict[str, SentCounts] = {}


def sends_path(state_dir: str | Path, pid: int) -> Path:
    """The sent-counts file of the actor process ``pid``."""
    return Path(state_dir) / "links" / f"{pid}.sends"


class SentCounts:
    """One sender incarnation's count of messages admitted per receiver, kept where a SIGKILL
    cannot erase it: its transport's queue dies with it, so the receivers learn from this
    (through the guardian) how many messages it owed them. An orderly exit, which
    dead-letters its queue itself, leaves only the count it sent (the bye may be lost)."""

    def __init__(self, *, path: Path | None = None, key: str = "") -> None:
        self._slots: dict[str, int] = {}
        self._memory: Sends = {}
        self._map: mmap.mmap | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, _SENDS_SIZE)
                self._map = mmap.mmap(fd, _SENDS_SIZE)
            finally:
                os.close(fd)
        else:
            _IN_PROCESS_SENDS[key] = self

    def slot(self, receiver: str) -> int | None:
        """The slot of ``receiver`` (allocated on first use; None when full or unnamed)."""
        offset = self._slots.get(receiver)
        if offset is None and self._map is not None:
            encoded = receiver.encode()
            if len(self._slots) >= _SENDS_SLOTS or not encoded or len(encoded) > _KEY:
                return None
            offset = self._slots[receiver] = len(self._slots) * _SEND.size
            _SEND.pack_into(self._map, offset, encoded, 0)
        return offset

    def count(self, receiver: str, offset: int | None, admitted: int) -> None:
        """Record that ``receiver`` is owed ``admitted`` messages: queued for it so far (or, at
        an orderly exit, sent to it)."""
        if self._map is None:
            self._memory[receiver] = admitted
        elif offset is not None:
            struct.pack_into("<Q", self._map, offset + _KEY, admitted)


def take_sends(*, key: str, state_dir: str | Path, pid: int | None) -> Sends:
    """Read and remove the sent counts of a sender whose process is gone."""
    held = _IN_PROCESS_SENDS.pop(key, None)
    if held is not None:
        return dict(held._memory)
    if pid is None:
        return {}
    path = sends_path(state_dir, pid)
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    with contextlib.suppress(OSError):
        path.unlink()
    sends: Sends = {}
    for index in range(min(_SENDS_SLOTS, len(data) // _SEND.size)):
        raw, admitted = _SEND.unpack_from(data, index * _SEND.size)
        name = raw.rstrip(b"\0").decode(errors="replace")
        if not name:
            break
        sends[name] = admitted
    return sends


_TALLY_KINDS = 64
_NAME_WORDS = 6  # a row: the kind's name in 48 bytes, then one 8-byte counter per ledger event
_COUNTERS = 9
_ROW_WORDS = _NAME_WORDS + _COUNTERS
_TALLY_SIZE = _TALLY_KINDS * _ROW_WORDS * 8
_OTHER_KINDS = "(other kinds)"
_LAST_ROW = (_TALLY_KINDS - 1) * _ROW_WORDS + _NAME_WORDS
_EVENT_INDEX = {
    "sent": 0,
    "delivered": 1,
    "handled": 2,
    "undelivered": 3,
    "dead_lettered": 4,
    "rejected": 5,
    "resent": 6,
    "duplicates_dropped": 7,
    "dropped_by_fault": 8,
}
"""``protocols.ledger.LEDGER_EVENTS``, in order (checked by a test)."""

Tally = dict[str, list[int]]
"""Message kind -> its nine ledger counters, in ``protocols.ledger.LEDGER_EVENTS`` order."""


def tally_path(state_dir: str | Path, pid: int) -> Path:
    """The ledger tally file of the actor process ``pid``."""
    return Path(state_dir) / "links" / f"{pid}.tally"


class LedgerTally:
    """One worker incarnation's ledger counters per message kind, kept where a SIGKILL cannot
    erase them (a memory-mapped file, like the handled marks; each count is one 8-byte store):
    when the incarnation is killed before it can report its ledger, its supervisor reads them
    instead (``take_tally``). An incarnation that reports its ledger on exit removes the file
    first (``discard``), so nothing is counted twice. More kinds than the file has rows share
    its last row."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._bases: dict[str, int] = {}
        self._overflow: dict[tuple[str, str], int] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _TALLY_SIZE)
            self._map: mmap.mmap | None = mmap.mmap(fd, _TALLY_SIZE)
        finally:
            os.close(fd)
        self._words: memoryview | None = memoryview(self._map).cast("Q")

    def store(self, kind: str, event: str, value: int) -> None:
        """Keep ``kind``'s new count of ``event`` (one memory store, no system call)."""
        words = self._words
        if words is None:
            return
        base = self._bases.get(kind)
        if base is None:
            base = self._row(kind)
        index = base + _EVENT_INDEX[event]
        if base == _LAST_ROW:  # the shared last row: add the change
            previous = self._overflow.get((kind, event), 0)
            self._overflow[kind, event] = value
            words[index] += value - previous
        else:
            words[index] = value

    def _row(self, kind: str) -> int:
        assert self._map is not None  # noqa: S101 - checked by the caller
        if len(self._bases) >= _TALLY_KINDS - 1:
            base = (_TALLY_KINDS - 1) * _ROW_WORDS
            name = _OTHER_KINDS
        else:
            base = len(self._bases) * _ROW_WORDS
            name = kind
        raw = name.encode()[: _NAME_WORDS * 8].ljust(_NAME_WORDS * 8, b"\0")
        self._map[base * 8 : base * 8 + _NAME_WORDS * 8] = raw
        self._bases[kind] = base + _NAME_WORDS
        return base + _NAME_WORDS

    def discard(self) -> None:
        """The ledger was reported: remove the file."""
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            self._map.close()
            self._map = None
        with contextlib.suppress(OSError):
            self._path.unlink()


def take_tally(*, state_dir: str | Path, pid: int | None) -> Tally | None:
    """Read and remove the tally of a worker whose process is gone without reporting its
    ledger (None: it left none, having reported)."""
    if pid is None:
        return None
    data = _take_file(tally_path(state_dir, pid), _TALLY_SIZE, "ledger_tally_unreadable")
    if data is None:
        return None
    words = memoryview(data).cast("Q")
    tally: Tally = {}
    for row in range(_TALLY_KINDS):
        base = row * _ROW_WORDS
        name = data[base * 8 : (base + _NAME_WORDS) * 8].rstrip(b"\0")
        if name:
            counters = list(words[base + _NAME_WORDS : base + _ROW_WORDS])
            tally[name.decode(errors="replace")] = counters
    return tally
