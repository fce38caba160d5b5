"""The ledger's counters without an actor (actors.core.ledger)."""

from __future__ import annotations

from actors.core.ledger import Ledger, balanced, merge, report
from protocols.ledger import LedgerCounts


def test_counts_are_kept_per_link_and_per_kind() -> None:
    ledger = Ledger()
    ledger.count("sent", "root/sink", "test.item", 3)
    ledger.count("sent", "root/other", "test.item")
    ledger.count("undelivered", "root/sink", "test.ping")

    snap = ledger.snapshot("root/source")

    assert "root/source" == snap.path
    assert LedgerCounts(sent=4, undelivered=1) == snap.total
    assert LedgerCounts(sent=3, undelivered=1) == snap.by_link["root/sink"]
    assert LedgerCounts(sent=4) == snap.by_kind["test.item"]


def test_incarnations_of_one_path_add_up() -> None:
    first, second = Ledger(), Ledger()
    first.count("handled", "a", "k", 2)
    second.count("handled", "a", "k", 3)
    second.count("rejected", "b", "bad")

    merged = merge(first.snapshot("root/x"), second.snapshot("root/x"))

    assert LedgerCounts(handled=5, rejected=1) == merged.total
    assert LedgerCounts(handled=5) == merged.by_kind["k"]


def test_the_report_balances_only_when_every_sent_message_is_accounted_for() -> None:
    source, sink = Ledger(), Ledger()
    source.count("sent", "root/sink", "k", 10)
    sink.count("handled", "x", "k", 7)
    source.count("undelivered", "root/sink", "k", 2)

    short = report([source.snapshot("root/source"), sink.snapshot("root/sink")])
    source.count("dead_lettered", "root/sink", "k")
    whole = report([source.snapshot("root/source"), sink.snapshot("root/sink")])
    killed = report([source.snapshot("root/source"), sink.snapshot("root/sink")], unreported=1)

    assert not short.balanced
    assert whole.balanced
    assert balanced(whole.total)
    assert not killed.balanced  # a killed incarnation's counters are missing
    assert ["root/sink", "root/source"] == list(whole.by_actor)
