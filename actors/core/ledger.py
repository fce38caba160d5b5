"""The ledger's counters, pure (no Thespian): see ``protocols.ledger`` for what they mean."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from protocols.ledger import LEDGER_EVENTS, LedgerCounts, LedgerEvent, LedgerReport, LedgerSnapshot

__all__ = ["Ledger", "add_counts", "balanced", "from_tally", "merge", "report"]


class Ledger:
    """Counters per (event, link) and per (event, kind) of one worker incarnation."""

    def __init__(self) -> None:
        self._by_link: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._by_kind: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.keep: Callable[[str, str, int], None] | None = None
        """Called with a kind, an event and its new count after each count, to keep the
        counters where a SIGKILL cannot erase them (``actors.core.link_marks.LedgerTally``)."""

    def count(self, event: LedgerEvent, link: str, kind: str, n: int = 1) -> None:
        """Add ``n`` to ``event`` for ``link`` and for ``kind``."""
        self._by_link[link][event] += n
        row = self._by_kind[kind]
        value = row[event] = row[event] + n
        if self.keep is not None:
            self.keep(kind, event, value)

    def snapshot(self, path: str) -> LedgerSnapshot:
        """The counters so far."""
        by_link = {link: LedgerCounts(**counts) for link, counts in self._by_link.items()}
        by_kind = {kind: LedgerCounts(**counts) for kind, counts in self._by_kind.items()}
        return LedgerSnapshot(
            path=path, total=add_counts(by_kind.values()), by_link=by_link, by_kind=by_kind
        )


def from_tally(path: str, tally: dict[str, list[int]]) -> LedgerSnapshot:
    """The snapshot of a killed incarnation, from the counters it kept per kind (no per-link
    rows: only kinds were kept)."""
    by_kind = {
        kind: LedgerCounts(**dict(zip(LEDGER_EVENTS, row, strict=True)))
        for kind, row in tally.items()
    }
    return LedgerSnapshot(path=path, total=add_counts(by_kind.values()), by_kind=by_kind)


def add_counts(rows: Iterable[LedgerCounts]) -> LedgerCounts:
    """The sum of ``rows``."""
    total = dict.fromkeys(LEDGER_EVENTS, 0)
    for row in rows:
        for event in LEDGER_EVENTS:
            total[event] += getattr(row, event)
    return LedgerCounts(**total)


def merge(a: LedgerSnapshot, b: LedgerSnapshot) -> LedgerSnapshot:
    """Two incarnations' snapshots of one path, added up."""

    def rows(x: dict[str, LedgerCounts], y: dict[str, LedgerCounts]) -> dict[str, LedgerCounts]:
        return {key: add_counts(r for r in (x.get(key), y.get(key)) if r) for key in {*x, *y}}

    return LedgerSnapshot(
        path=a.path,
        total=add_counts([a.total, b.total]),
        by_link=rows(a.by_link, b.by_link),
        by_kind=rows(a.by_kind, b.by_kind),
    )


def balanced(counts: LedgerCounts) -> bool:
    """Every message sent was handled, reported undelivered, dead-lettered or dropped by an
    injected fault."""
    return counts.sent == (
        counts.handled + counts.undelivered + counts.dead_lettered + counts.dropped_by_fault
    )


def report(snapshots: Iterable[LedgerSnapshot], *, unreported: int = 0) -> LedgerReport:
    """Add up the snapshots of every worker incarnation into the tree's report."""
    by_actor: dict[str, list[LedgerCounts]] = defaultdict(list)
    by_kind: dict[str, list[LedgerCounts]] = defaultdict(list)
    for snap in snapshots:
        by_actor[snap.path].append(snap.total)
        for kind, counts in snap.by_kind.items():
            by_kind[kind].append(counts)
    total = add_counts(row for rows in by_actor.values() for row in rows)
    return LedgerReport(
        total=total,
        by_kind={kind: add_counts(rows) for kind, rows in sorted(by_kind.items())},
        by_actor={path: add_counts(rows) for path, rows in sorted(by_actor.items())},
        unreported=unreported,
        balanced=balanced(total) and unreported == 0,
    )
