"""The audit log, pure: a hash-chained JSON-lines file, appended to and verified (no Thespian).

One entry per line, in canonical JSON (keys sorted, no spaces, ASCII only)::

    {"action":"access_granted","actor":"root/agents/agent-1","detail":{...},"hash":"<hmac>",
     "key":"<key id>","prev":"<hash of the entry before>","seq":0,"time":1700000000.5,
     "type":"decision"}

    seq     the entry's index (0, 1, 2 ...)
    type    decision (an access check) | admin (a change of roles or scopes, replayed at start)
            | external (appended by another actor with AppendAudit)
    prev    the ``hash`` of the entry before; the first entry's is GENESIS_HASH (64 zeros)
    key     the id (``actors.core.keyring.key_id``) of the deployment secret's key that made
            ``hash``: after a rotation, older entries verify under the key they name
    hash    HMAC-SHA256, under that key, of the canonical JSON of the entry without ``hash``

``verify_audit_log`` reads a file line by line and reports, per line at fault, what is wrong:
a line that is not JSON or not an entry, a ``seq`` that does not follow the one before (an
entry was removed, inserted or moved), a ``prev`` that is not the hash of the entry before,
a ``hash`` that does not match the content (an edit), or a line not in canonical form (an
edit that left the content equal). It keeps following the chain from what each line states,
so one tampering gives one or a few problems, the first at the exact line. Removing entries
from the END leaves a valid, shorter chain: only a known head (entries, last hash, as
``understudy status`` shows them) detects that, via ``head=``.

The chain is keyed with the deployment secret: whoever can write the file but does not hold
the secret cannot forge an entry, nor rewrite the whole log with a chain of their own (every
hash fails to verify). An entry naming a key that is not in the secret file (an old key
retired too early, or a forgery) is reported as such; so is an entry without a key (a log
written before the chain was keyed), which cannot be verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from actors.core.keyring import Keyring, SecretError, key_id
from protocols.access import AuditVerification

GENESIS_HASH = "0" * 64
ENTRY_TYPES = ("decision", "admin", "external")
EntryType = Literal["decision", "admin", "external"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("action", "actor", "detail", "hash", "key", "prev", "seq", "time", "type")


class InvalidAuditDetail(ValueError):
    """An entry's detail cannot be written as JSON (bytes, NaN, non-text keys ...)."""

    error = "InvalidAuditDetail"


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON bytes of ``value``: sorted keys, no spaces, ASCII only.

    Raises:
        ValueError, TypeError: ``value`` is not JSON (NaN, bytes, non-text keys ...).
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def entry_hash(entry: Mapping[str, Any], key: bytes) -> str:
    """Return the HMAC-SHA256 (hex) under ``key`` of an entry's canonical JSON without its
    ``hash`` field."""
    body = {name: value for name, value in entry.items() if name != "hash"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


@dataclass
class LineCheck:
    """What verification found on one line."""

    index: int
    entry: dict[str, Any] | None
    problems: list[str]
    content_ok: bool

    @property
    def problem(self) -> str | None:
        """All problems of the line in one description, or None."""
        return "; ".join(self.problems) if self.problems else None


class ChainChecker:
    """Follow a chain line by line; ``next_seq`` and ``last_hash`` say where it continues.

    ``keys`` are the deployment secret's keys (every entry's ``key`` must name one of them).
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = {key_id(key): key for key in keys}
        self.entries = 0
        self.next_seq = 0
        self.last_hash = GENESIS_HASH

    def feed(self, raw: bytes) -> LineCheck:
        """Check the next line (without its newline) against the chain so far."""
        index = self.entries
        self.entries += 1
        entry, problems = _parse(raw)
        if entry is None:
            self.next_seq += 1
            self.last_hash = hashlib.sha256(raw).hexdigest()
            return LineCheck(index, None, problems, content_ok=False)
        content_ok = not problems  # well-formed so far; chain links do not affect content
        seq, prev, stated = entry.get("seq"), entry.get("prev"), entry.get("hash")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq != self.next_seq:
            problems.append(
                f"seq is {seq}, expected {self.next_seq} "
                "(an entry was removed, inserted or moved here)"
            )
        if isinstance(prev, str) and prev != self.last_hash:
            problems.append(
                "prev is not the hash of the entry before "
                "(an entry before it was removed, inserted, moved or rewritten)"
            )
        if isinstance(stated, str) and _HEX64.fullmatch(stated):
            named = entry.get("key")
            key = self._keys.get(named) if isinstance(named, str) else None
            if key is None:
                problems.append(
                    "the entry names no key of the deployment secret "
                    f"(key {named!r}): it cannot be verified"
                    if named is not None
                    else "the entry has no key (written before the log was keyed): "
                    "it cannot be verified"
                )
                content_ok = False
            elif not hmac.compare_digest(stated, entry_hash(entry, key)):
                problems.append(
                    "hash does not verify under the deployment secret "
                    "(the entry was edited, or written without the key)"
                )
                content_ok = False
            elif raw != canonical_json(entry):
                problems.append("the line is not in canonical form (the entry was edited)")
                content_ok = False
            self.last_hash = stated
        else:
            self.last_hash = hashlib.sha256(raw).hexdigest()
        self.next_seq = (
            seq + 1 if isinstance(seq, int) and not isinstance(seq, bool) else self.next_seq + 1
        )
        return LineCheck(index, entry, problems, content_ok=content_ok)


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse one line into an entry; (None, [why]) if it is not JSON or not an object.

    A parsed object with missing or ill-typed fields is returned with its problems listed.
    """
    if not raw.strip():
        return None, ["the line is empty"]
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, [f"the line is not valid JSON ({exc})"]
    if not isinstance(value, dict):
        return None, [f"the line is a JSON {type(value).__name__}, not an entry object"]
    problems: list[str] = []
    missing = [name for name in _FIELDS if name not in value]
    extra = sorted(set(value) - set(_FIELDS))
    if missing:
        problems.append(f"malformed entry: missing {', '.join(missing)}")
    if extra:
        problems.append(f"malformed entry: unexpected {', '.join(extra)}")
    wrong = [name for name, ok in _field_types(value).items() if name in value and not ok]
    if wrong:
        problems.append(f"malformed entry: bad {', '.join(wrong)}")
    return value, problems


def _reject_constant(name: str) -> None:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _field_types(value: dict[str, Any]) -> dict[str, bool]:
    seq, stamp = value.get("seq"), value.get("time")
    return {
        "seq": isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0,
        "time": isinstance(stamp, int | float) and not isinstance(stamp, bool),
        "type": value.get("type") in ENTRY_TYPES,
        "actor": isinstance(value.get("actor"), str),
        "action": isinstance(value.get("action"), str),
        "detail": isinstance(value.get("detail"), dict),
        "prev": isinstance(value.get("prev"), str) and bool(_HEX64.fullmatch(value["prev"])),
        "hash": isinstance(value.get("hash"), str) and bool(_HEX64.fullmatch(value["hash"])),
        "key": isinstance(value.get("key"), str),
    }


def read_lines(path: Path) -> Iterator[bytes]:
    """Yield the lines of ``path`` without their newlines (a final unterminated line too)."""
    with path.open("rb") as fh:
        for line in fh:
            yield line[:-1] if line.endswith(b"\n") else line


def check_log(path: Path, keys: Sequence[bytes]) -> Iterator[LineCheck]:
    """Check every line of the audit log at ``path``, in order, under ``keys``."""
    checker = ChainChecker(keys)
    for raw in read_lines(path):
        yield checker.feed(raw)


def verify_audit_log(
    path: str | os.PathLike[str],
    *,
    keys: Sequence[bytes],
    head: tuple[int, str] | None = None,
) -> AuditVerification:
    """Verify the keyed hash chain of the audit log at ``path``; usable without a runtime.

    Args:
        path: the JSON-lines audit file.
        keys: the deployment secret's keys (``actors.core.keyring.read_key_file``).
        head: ``(entries, last_hash)`` known from earlier (``understudy status``): the file
            must still hold at least that many entries, the last of them with that hash.
            Without it, entries removed from the end cannot be noticed.

    Returns:
        ``ok``, the number of lines (``entries``) and ``(index, description)`` problems.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    problems: list[tuple[int, str]] = []
    head_hash: str | None = None
    entries = 0
    for check in check_log(Path(path), keys):
        entries += 1
        if check.problem is not None:
            problems.append((check.index, check.problem))
        if head is not None and check.index == head[0] - 1 and check.entry is not None:
            head_hash = check.entry.get("hash")
    if head is not None and head[0] > 0:
        expected_entries, expected_hash = head
        if entries < expected_entries:
            missing = (
                f"the log ends after {entries} entries, {expected_entries} expected "
                "(entries removed from its end)"
            )
            problems.append((entries, missing))
        elif head_hash != expected_hash:
            problems.append(
                (expected_entries - 1, f"hash is not the expected head {expected_hash[:16]}...")
            )
    return AuditVerification(ok=not problems, entries=entries, problems=problems)


# --- Appending ------------------------------------------------------------------------------


@dataclass
class OpenReport:
    """What ``AuditLog.open`` found in an existing file."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    admin_entries: list[dict[str, Any]] = field(default_factory=list)
    repaired_tail: bool = False


class AuditLog:
    """The single writer of one audit file: continues the chain that is there."""

    def __init__(
        self,
        path: Path,
        *,
        keyring: Keyring,
        clock: Callable[[], float] = time.time,
        fsync: bool = False,
    ) -> None:
        self.path = path
        self.keyring = keyring
        self._clock = clock
        self._fsync = fsync
        self.entries = 0
        self.next_seq = 0
        self.last_hash = GENESIS_HASH
        self._fd: int | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        keyring: Keyring,
        clock: Callable[[], float] = time.time,
        fsync: bool = False,
    ) -> tuple[AuditLog, OpenReport]:
        """Open (or create) the file, check the chain in it and continue from its last entry.

        Nothing already written is changed: a broken chain is reported, not repaired. Only a
        missing newline after the last line (a partial write) is completed, so that the next
        entry starts on a line of its own.

        Returns:
            The log and a report: the problems found and the intact admin entries in order
            (their content matches their hash), for replaying the grants.
        """
        log = cls(path, keyring=keyring, clock=clock, fsync=fsync)
        report = OpenReport()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            checker = ChainChecker(keyring.keys)
            for raw in read_lines(path):
                check = checker.feed(raw)
                if check.problem is not None:
                    report.problems.append((check.index, check.problem))
                if check.content_ok and check.entry is not None and check.entry["type"] == "admin":
                    report.admin_entries.append(check.entry)
            log.entries, log.next_seq, log.last_hash = (
                checker.entries,
                checker.next_seq,
                checker.last_hash,
            )
        log._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        size = os.fstat(log._fd).st_size
        if size:
            with path.open("rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    log._write(b"\n")
                    report.repaired_tail = True
        return log, report

    def append(
        self, entry_type: EntryType, actor: str, action: str, detail: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq`` and ``hash``).

        Raises:
            InvalidAuditDetail: ``detail`` is not JSON; nothing was written.
            OSError: the file could not be written (the caller should fail, not go on).
        """
        try:
            # The round trip makes the returned entry what a reader of the file gets back
            # (tuples become lists, integer keys text).
            plain = json.loads(canonical_json(dict(detail)))
        except (TypeError, ValueError) as exc:
            msg = f"audit detail for {action!r} is not JSON: {exc}"
            raise InvalidAuditDetail(msg) from exc
        try:
            self.keyring.refresh()  # a rotated secret: new entries use the new current key
        except SecretError:
            pass  # a bad edit of the secret file: the previous keys stay in use (logged there)
        key = self.keyring.current
        entry: dict[str, Any] = {
            "seq": self.next_seq,
            "time": self._clock(),
            "type": entry_type,
            "actor": actor,
            "action": action,
            "detail": plain,
            "prev": self.last_hash,
            "key": key_id(key),
        }
        entry["hash"] = entry_hash(entry, key)
        line = canonical_json(entry) + b"\n"
        self._write(line)
        self.entries += 1
        self.next_seq += 1
        self.last_hash = entry["hash"]
        return entry

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            msg = f"the audit log {self.path} is closed"
            raise OSError(msg)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = [
    "ENTRY_TYPES",
    "GENESIS_HASH",
    "AuditLog",
    "ChainChecker",
    "InvalidAuditDetail",
    "LineCheck",
    "OpenReport",
    "canonical_json",
    "check_log",
    "entry_hash",
    "verify_audit_log",
]
