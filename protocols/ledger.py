"""The message ledger: what happened to the messages of the data path, counted.

Every worker counts, per link (destination or source path) and per message kind:

    sent            queued on the data path to another actor (``send`` / ``request``)
    delivered       arrived here on the data path and taken for handling
    handled         its handler ran here (raising included: the message was consumed)
    undelivered     reported back to its sender: the receiver exited before handling it
    dead_lettered   never sent: no actor at the path, or its sender exited with it queued or
                    unacknowledged
    rejected        a bad envelope or frame refused on arrival (undecodable, unknown kind,
                    invalid fields)
    resent          sent again: its frame's acknowledgement was overdue (a frame lost)
    dropped_by_fault
                    dropped (or corrupted, or held by a delay when its receiver exited) by an
                    injected fault (``protocols.faults``)
    duplicates_dropped
                    arrived again after it was handled (a resend whose acknowledgement was
                    lost, or a duplicate frame) and dropped: handled once only

A receiver also dead-letters, on a killed sender's behalf, what that sender announced but
never delivered (frames lost with it, messages still in its queue); their kind is unknown
("?").

``Runtime.ledger()`` adds up the live workers' counters and those every incarnation reported
when it exited; a worker killed without a chance to report (SIGKILL) is counted in
``unreported``. Once the system is quiet,
``sent == handled + undelivered + dead_lettered + dropped_by_fault`` holds when nothing was
lost (``LedgerReport.balanced``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocols._base import Message

__all__ = [
    "LEDGER_EVENTS",
    "GetLedger",
    "LedgerCounts",
    "LedgerEvent",
    "LedgerReport",
    "LedgerSnapshot",
    "RetiredLedgers",
]

LedgerEvent = Literal[
    "sent",
    "delivered",
    "handled",
    "undelivered",
    "dead_lettered",
    "rejected",
    "resent",
    "duplicates_dropped",
    "dropped_by_fault",
]
LEDGER_EVENTS: tuple[LedgerEvent, ...] = (
    "sent",
    "delivered",
    "handled",
    "undelivered",
    "dead_lettered",
    "rejected",
    "resent",
    "duplicates_dropped",
    "dropped_by_fault",
)


class LedgerCounts(Message):
    """One row of counters."""

    kind: Literal["ledger.counts"] = "ledger.counts"
    sent: int = 0
    delivered: int = 0
    handled: int = 0
    undelivered: int = 0
    dead_lettered: int = 0
    rejected: int = 0
    resent: int = 0
    duplicates_dropped: int = 0
    dropped_by_fault: int = 0


class GetLedger(Message):
    """Ask a worker for its ledger; answered LedgerSnapshot."""

    kind: Literal["ledger.get_ledger"] = "ledger.get_ledger"


class LedgerSnapshot(Message):
    """One worker incarnation's counters: in total, per link and per message kind."""

    kind: Literal["ledger.snapshot"] = "ledger.snapshot"
    path: str
    total: LedgerCounts
    by_link: dict[str, LedgerCounts] = Field(default_factory=dict)
    by_kind: dict[str, LedgerCounts] = Field(default_factory=dict)


class RetiredLedgers(Message):
    """The guardian's answer to GetLedger: the counters of the incarnations that have exited
    (summed per path), and how many were killed without reporting."""

    kind: Literal["ledger.retired"] = "ledger.retired"
    snapshots: list[LedgerSnapshot] = Field(default_factory=list)
    unreported: int = 0


class LedgerReport(Message):
    """The whole tree's ledger (``Runtime.ledger()``)."""

    kind: Literal["ledger.report"] = "ledger.report"
    total: LedgerCounts
    by_kind: dict[str, LedgerCounts] = Field(default_factory=dict)
    by_actor: dict[str, LedgerCounts] = Field(default_factory=dict)
    unreported: int = Field(
        default=0, description="worker incarnations that died without reporting (SIGKILL)"
    )
    balanced: bool = Field(
        description="sent == handled + undelivered + dead_lettered + dropped_by_fault (once quiet)"
    )
