"""The audit log without an actor: appending, continuing a chain, and finding tampering."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from actors.core.keyring import Keyring, key_id, write_key_file
from actors.services.access_audit import (
    GENESIS_HASH,
    AuditLog,
    InvalidAuditDetail,
    canonical_json,
    entry_hash,
    verify_audit_log,
)

KEY = bytes(range(32))
KEYS = [KEY]
RING = Keyring("/nonexistent/understudy-test-secret", keys=KEYS)


def write_log(path: Path, n: int) -> AuditLog:
    log, _report = AuditLog.open(path, keyring=RING, clock=lambda: 1000.5)
    for i in range(n):
        log.append("decision", f"agent-{i}", "access_granted", {"i": i, "resource": f"/w/{i}"})
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def put_lines(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in content))


def test_entries_chain_from_the_genesis_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3).close()

    entries = [json.loads(line) for line in lines(path)]

    assert [0, 1, 2] == [e["seq"] for e in entries]
    assert GENESIS_HASH == entries[0]["prev"]
    assert entries[0]["hash"] == entries[1]["prev"]
    assert entries[1]["hash"] == entries[2]["prev"]
    for entry, raw in zip(entries, lines(path), strict=True):
        assert entry_hash(entry, KEY) == entry["hash"]
        assert canonical_json(entry) == raw


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5).close()

    result = verify_audit_log(path, keys=KEYS)

    assert result.ok
    assert 5 == result.entries
    assert [] == result.problems


def test_an_empty_log_verifies_and_a_missing_one_raises(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")

    assert verify_audit_log(tmp_path / "empty.jsonl", keys=KEYS).ok
    with pytest.raises(FileNotFoundError):
        verify_audit_log(tmp_path / "missing.jsonl", keys=KEYS)


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 2)
    last_hash = first.last_hash
    first.close()

    again, report = AuditLog.open(path, keyring=RING)
    entry = again.append("external", "root/system/scheduler", "task_reaped", {"task": "t-1"})
    again.close()

    assert [] == report.problems
    assert 2 == entry["seq"]
    assert last_hash == entry["prev"]
    assert 3 == again.entries
    assert verify_audit_log(path, keys=KEYS).ok


def test_an_edited_entry_is_reported_at_its_index(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4).close()
    content = lines(path)
    content[2] = content[2].replace(b'"agent-2"', b'"agent-X"')
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert not result.ok
    assert [2] == [index for index, _ in result.problems]
    assert "the entry was edited" in result.problems[0][1]


def test_an_edit_that_recomputes_the_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4).close()
    entry = json.loads(lines(path)[1])
    entry["actor"] = "mallory"
    entry["hash"] = entry_hash(entry, KEY)
    content = lines(path)
    content[1] = canonical_json(entry)
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert [2] == [index for index, _ in result.problems]
    assert "prev is not the hash of the entry before" in result.problems[0][1]


def test_a_cosmetic_edit_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2).close()
    content = lines(path)
    content[0] = content[0].replace(b'"seq":0', b'"seq": 0')
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert [(0, "the line is not in canonical form (the entry was edited)")] == result.problems


def test_a_removed_entry_is_reported_where_it_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5).close()
    content = lines(path)
    del content[2]
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert 4 == result.entries
    assert [2] == [index for index, _ in result.problems]
    assert "seq is 3, expected 2" in result.problems[0][1]


def test_an_inserted_entry_is_reported_at_its_index(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4).close()
    content = lines(path)
    content.insert(1, content[3])
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert 1 == result.problems[0][0]
    assert "seq is 3, expected 1" in result.problems[0][1]


def test_swapped_entries_are_reported_at_the_first_of_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5).close()
    content = lines(path)
    content[1], content[3] = content[3], content[1]
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert 1 == result.problems[0][0]
    assert "seq is 3, expected 1" in result.problems[0][1]


def test_a_garbage_line_is_reported_and_the_chain_followed_past_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3).close()
    content = lines(path)
    content[1] = b"{not json"
    put_lines(path, content)

    result = verify_audit_log(path, keys=KEYS)

    assert [1, 2] == [index for index, _ in result.problems]
    assert "not valid JSON" in result.problems[0][1]
    assert "prev is not the hash" in result.problems[1][1]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"", "the line is empty"),
        (b"[1, 2]", "JSON list, not an entry"),
        (b'{"seq": NaN}', "not valid JSON"),
        (b'{"seq": 0}', "missing action, actor, detail, hash, key, prev, time, type"),
    ],
)
def test_lines_that_are_not_entries_are_described(
    tmp_path: Path, line: bytes, complaint: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(line + b"\n")

    result = verify_audit_log(path, keys=KEYS)

    assert [0] == [index for index, _ in result.problems]
    assert complaint in result.problems[0][1]


def test_removing_entries_from_the_end_is_found_only_against_a_known_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = write_log(path, 4)
    head = (log.entries, log.last_hash)
    log.close()
    put_lines(path, lines(path)[:3])

    alone = verify_audit_log(path, keys=KEYS)
    against_head = verify_audit_log(path, head=head, keys=KEYS)

    assert alone.ok
    assert [(3, "the log ends after 3 entries, 4 expected (entries removed from its end)")] == (
        against_head.problems
    )


def test_a_head_that_matches_verifies_and_a_rewritten_one_does_not(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = write_log(path, 3)
    head = (log.entries, log.last_hash)
    log.close()

    assert verify_audit_log(path, head=head, keys=KEYS).ok
    assert not verify_audit_log(path, head=(3, "f" * 64), keys=KEYS).ok


def test_opening_a_broken_log_reports_it_and_appends_after_its_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3).close()
    content = lines(path)
    content[1] = content[1].replace(b'"i":1', b'"i":7')
    put_lines(path, content)
    before = path.read_bytes()

    log, report = AuditLog.open(path, keyring=RING)
    entry = log.append("decision", "a", "access_denied", {})
    log.close()

    assert [1] == [index for index, _ in report.problems]
    assert path.read_bytes().startswith(before), "existing entries are never rewritten"
    assert json.loads(content[2])["hash"] == entry["prev"]
    assert 3 == entry["seq"]
    assert [1] == [index for index, _ in verify_audit_log(path, keys=KEYS).problems]


def test_a_partial_last_line_is_completed_and_chained_past(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2).close()
    partial = b'{"action":"access_gr'
    with path.open("ab") as fh:
        fh.write(partial)

    log, report = AuditLog.open(path, keyring=RING)
    entry = log.append("decision", "a", "access_granted", {})
    log.close()

    assert report.repaired_tail
    assert [2] == [index for index, _ in report.problems]
    assert hashlib.sha256(partial).hexdigest() == entry["prev"]
    assert 3 == entry["seq"]
    result = verify_audit_log(path, keys=KEYS)
    assert [2] == [index for index, _ in result.problems], "the entry after the break verifies"
    assert 4 == result.entries


def test_open_returns_intact_admin_entries_for_replay(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log, _ = AuditLog.open(path, keyring=RING)
    log.append("admin", "system", "role_granted", {"subject": "a", "role": "reader"})
    log.append("decision", "a", "access_granted", {})
    log.append("admin", "system", "role_granted", {"subject": "b", "role": "reader"})
    log.append("admin", "system", "role_granted", {"subject": "c", "role": "reader"})
    log.close()
    content = lines(path)
    content[2] = content[2].replace(b'"b"', b'"mallory"')
    put_lines(path, content)

    _log, report = AuditLog.open(path, keyring=RING)
    _log.close()

    assert ["a", "c"] == [e["detail"]["subject"] for e in report.admin_entries]


@pytest.mark.parametrize("detail", [{"x": float("nan")}, {"x": b"bytes"}, {"x": {1: 2, "a": 3}}])
def test_a_detail_that_is_not_json_is_refused_and_nothing_written(
    tmp_path: Path, detail: dict[str, object]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = write_log(path, 1)
    size = path.stat().st_size

    with pytest.raises(InvalidAuditDetail):
        log.append("external", "x", "y", detail)
    entry = log.append("external", "x", "y", {"ok": True})
    log.close()

    assert 1 == entry["seq"]
    assert size < path.stat().st_size
    assert verify_audit_log(path, keys=KEYS).ok


def test_the_returned_entry_is_what_a_reader_gets_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log, _ = AuditLog.open(path, keyring=RING)

    entry = log.append("external", "x", "y", {"pair": (1, 2), "keys": {3: "three"}})
    log.close()

    assert json.loads(lines(path)[0]) == entry
    assert {"pair": [1, 2], "keys": {"3": "three"}} == entry["detail"]
    assert verify_audit_log(path, keys=KEYS).ok


# --- The key ------------------------------------------------------------------------------


def test_a_log_rewritten_without_the_key_fails_at_every_line(tmp_path: Path) -> None:
    """Whoever can write the file but lacks the secret recomputes the chain in vain."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3).close()
    forged = []
    prev = GENESIS_HASH
    for raw in lines(path):
        entry = json.loads(raw)
        entry["actor"] = "mallory"
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry, b"a key that is not the deployment secret!")
        prev = entry["hash"]
        forged.append(canonical_json(entry))
    put_lines(path, forged)

    result = verify_audit_log(path, keys=KEYS)

    assert not result.ok
    assert [0, 1, 2] == [index for index, _ in result.problems]
    assert all("does not verify under the deployment secret" in p for _, p in result.problems)


def test_an_unkeyed_entry_cannot_be_verified(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 1).close()
    entry = json.loads(lines(path)[0])
    del entry["key"]
    entry["hash"] = hashlib.sha256(canonical_json(entry)).hexdigest()
    put_lines(path, [canonical_json(entry)])

    [(index, problem)] = verify_audit_log(path, keys=KEYS).problems

    assert 0 == index
    assert "missing key" in problem


def test_after_a_rotation_old_entries_verify_under_the_key_they_name(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    old, new = bytes(range(32)), bytes(range(1, 33))
    write_key_file(secret, [old])
    path = tmp_path / "audit.jsonl"
    log, _ = AuditLog.open(path, keyring=Keyring(secret))
    log.append("decision", "a", "access_granted", {})
    write_key_file(secret, [new, old])
    log.keyring.refresh(force=True)
    log.append("decision", "b", "access_granted", {})
    log.close()
    named = [json.loads(raw)["key"] for raw in lines(path)]

    assert [key_id(old), key_id(new)] == named
    assert verify_audit_log(path, keys=[new, old]).ok
    retired = verify_audit_log(path, keys=[new])
    assert [0] == [index for index, _ in retired.problems]
    assert f"key '{key_id(old)}'" in retired.problems[0][1]
