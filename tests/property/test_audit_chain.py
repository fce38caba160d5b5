"""Properties of the hash chain: intact logs verify; any single tampering is found where it is."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.keyring import Keyring
from actors.services.access_audit import ENTRY_TYPES, AuditLog, verify_audit_log
from tests.strategies import json_objects

appends = st.tuples(
    st.sampled_from(ENTRY_TYPES), st.text(max_size=10), st.text(max_size=10), json_objects
)

KEY = bytes(range(32))
KEYS = [KEY]
RING = Keyring("/nonexistent/understudy-test-secret", keys=KEYS)


def build(path: Path, records: list[tuple[Any, str, str, dict[str, Any]]]) -> tuple[int, str]:
    """Write ``records`` as a new log at ``path``; return its head (entries, last hash)."""
    log, _report = AuditLog.open(
        path, keyring=RING, clock=lambda: 1234.5
    )  # same lines for the same draws
    for entry_type, actor, action, detail in records:
        log.append(entry_type, actor, action, detail)
    log.close()
    return log.entries, log.last_hash


def split(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def first_difference(before: list[bytes], after: list[bytes]) -> int:
    """The first line index at which two files' lines differ (one may be a prefix)."""
    for index, (old, new) in enumerate(zip(before, after, strict=False)):
        if old != new:
            return index
    return min(len(before), len(after))


@settings(max_examples=60)
@given(first=st.lists(appends, max_size=12), second=st.lists(appends, max_size=5))
def test_a_log_of_random_appends_verifies_even_across_reopening(
    first: list[Any], second: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        build(path, first)
        head = build(path, second)

        result = verify_audit_log(path, head=head, keys=KEYS)

    assert result.ok, result.problems
    assert len(first) + len(second) == result.entries
    assert result.entries == head[0]


@st.composite
def tamperings(draw: st.DrawFn, lines: list[bytes]) -> tuple[str, list[bytes]]:
    """One edit, deletion, insertion or swap of the lines of a log with at least 2 lines."""
    n = len(lines)
    what = draw(st.sampled_from(["edit", "delete", "insert", "swap"]))
    out = list(lines)
    if what == "edit":
        k = draw(st.integers(0, n - 1))
        pos = draw(st.integers(0, len(out[k]) - 1))
        old = out[k][pos]
        new = draw(st.integers(0, 255).filter(lambda b: b != old))
        out[k] = out[k][:pos] + bytes([new]) + out[k][pos + 1 :]
    elif what == "delete":
        del out[draw(st.integers(0, n - 1))]
    elif what == "insert":
        k = draw(st.integers(0, n))
        garbage = st.binary(max_size=40).filter(lambda b: b"\n" not in b)
        line = draw(st.sampled_from(lines) | garbage)
        out.insert(k, line)
    else:
        k, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        out[k], out[j] = out[j], out[k]
    return what, out


@settings(max_examples=300)
@given(records=st.lists(appends, min_size=2, max_size=10), data=st.data())
def test_any_single_tampering_is_reported_first_at_the_line_it_changed(
    records: list[Any], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        head = build(path, records)
        original = split(path.read_bytes())
        what, tampered = data.draw(tamperings(original))
        path.write_bytes(b"".join(line + b"\n" for line in tampered))
        changed_at = first_difference(original, split(path.read_bytes()))

        result = verify_audit_log(path, head=head, keys=KEYS)

    assert not result.ok, what
    assert changed_at == result.problems[0][0], (what, result.problems)
