"""The data path: batching, credits, order, no loss or duplication, pipelined requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import ActorCrashed
from actors.core.seam import DEFAULT_BATCH_MAX, DEFAULT_MAX_QUEUE, DEFAULT_WINDOW
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._fast_workers import (
    Accounted,
    Burst,
    Done,
    Pipeline,
    Seen,
    Sent,
    WaitAccounted,
    WaitDrained,
    WaitSeen,
)

W = "tests.integration._fast_workers"


def _tree(sink_args: dict[str, object] | None = None) -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="sink", start=f"{W}:Sink", args=sink_args or {}),
            ChildSpec(id="source", start=f"{W}:Source"),
            ChildSpec(id="requester", start=f"{W}:Requester"),
        ],
    )


def test_a_burst_arrives_complete_and_in_order(start_tree: StartTree) -> None:
    rt = start_tree(_tree())

    sent = rt.ask("root/source", Burst(target="root/sink", count=5000), timeout=30)
    seen = rt.ask("root/sink", WaitSeen(count=5000), timeout=30)

    assert Sent(count=5000) == sent
    assert isinstance(seen, Seen)
    assert list(range(5000)) == seen.seqs


def test_a_lone_message_is_delivered_without_further_traffic(start_tree: StartTree) -> None:
    rt = start_tree(_tree())

    rt.ask("root/source", Burst(target="root/sink", start=7, count=1))
    seen = rt.ask("root/sink", WaitSeen(count=1), timeout=5)

    assert Seen(seqs=[7]) == seen


def test_several_bursts_from_one_sender_keep_their_order(start_tree: StartTree) -> None:
    rt = start_tree(_tree())

    for start in range(0, 3000, 1000):
        rt.ask("root/source", Burst(target="root/sink", start=start, count=1000))
    seen = rt.ask("root/sink", WaitSeen(count=3000), timeout=30)

    assert isinstance(seen, Seen)
    assert list(range(3000)) == seen.seqs


def test_pipelined_requests_all_get_their_replies(start_tree: StartTree) -> None:
    rt = start_tree(_tree())

    done = rt.ask(
        "root/requester", Pipeline(target="root/sink", count=2000, window=100), timeout=30
    )

    assert Done(count=2000) == done


def test_a_receiver_crash_loses_nothing_silently_and_duplicates_nothing(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """Items handled before the crash, plus those reported undelivered, plus those handled by
    the restarted receiver, are exactly the items sent, each once."""
    journal = tmp_path / "sink.journal"
    rt = start_tree(_tree({"crash_on": 1500, "journal": str(journal)}))
    total = 4000

    rt.ask("root/source", Burst(target="root/sink", count=total), timeout=30)
    rt.wait_event("child_restarted", child_id="sink", timeout=10)
    # The sender's report of what the crashed incarnation did not handle comes from the
    # guardian, in its own time: wait until nothing it sent is unaccounted for.
    undelivered = rt.ask("root/source", WaitDrained(target="root/sink"), timeout=30)
    assert isinstance(undelivered, Seen)
    lines = journal.read_text().split()
    before = [int(x) for x in lines[: lines.index("crash")]]
    expected_after = total - len(before) - 1 - len(undelivered.seqs)
    final = rt.ask("root/sink", WaitSeen(count=expected_after), timeout=30)
    assert isinstance(final, Seen)
    after = final.seqs

    assert list(range(1500)) == before
    assert after == sorted(after)
    assert list(range(total)) == sorted([*before, 1500, *undelivered.seqs, *after])


def test_a_request_that_crashes_the_receiver_reports_actorcrashed(start_tree: StartTree) -> None:
    rt = start_tree(_tree({"crash_on": 3}))
    from tests.integration._fast_workers import Item

    with pytest.raises(ActorCrashed, match="crash on 3"):
        rt.ask("root/sink", Item(seq=3))


def test_the_ledger_accounts_for_every_message_of_a_burst(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    rt.ask("root/source", Burst(target="root/sink", count=3000), timeout=30)
    rt.ask("root/sink", WaitSeen(count=3000), timeout=30)

    ledger = rt.ledger()

    assert ledger.balanced
    assert 3000 == ledger.by_actor["root/source"].sent
    assert 3000 == ledger.by_actor["root/sink"].handled
    assert 3000 == ledger.by_actor["root/sink"].delivered
    assert 3000 == ledger.by_kind["fast.item"].sent


def test_after_a_receiver_crash_the_ledger_still_accounts_for_every_message(
    start_tree: StartTree, tmp_path: Path
) -> None:
    rt = start_tree(_tree({"crash_on": 1500, "journal": str(tmp_path / "sink.journal")}))
    total = 4000
    rt.ask("root/source", Burst(target="root/sink", count=total), timeout=30)
    rt.wait_event("child_restarted", child_id="sink", timeout=10)
    # The sender's report of what the crashed incarnation did not handle comes from the
    # guardian, in its own time: wait until nothing it sent is unaccounted for.
    undelivered = rt.ask("root/source", WaitDrained(target="root/sink"), timeout=30)
    assert isinstance(undelivered, Seen)
    rt.ask("root/sink", WaitSeen(count=total - 1501 - len(undelivered.seqs)), timeout=30)

    ledger = rt.ledger()

    assert total == ledger.by_kind["fast.item"].sent
    assert len(undelivered.seqs) == ledger.total.undelivered
    assert ledger.balanced, ledger.total  # the crash's ActorCrashed reply included


def test_a_sender_that_outruns_a_slow_receiver_gets_backpressure(start_tree: StartTree) -> None:
    """A real link, a receiver that takes 0.2 ms per item: past ``max_queue`` waiting
    messages the sender's send raises Backpressure (a crash of its handler here); what it had
    queued is dead-lettered by the sender, what it had sent is handled by the receiver or
    (lost with the sender's process, bye included) dead-lettered on its behalf, never both:
    the ledger accounts for every message once the receiver has settled the sender."""
    rt = start_tree(_tree({"work": 0.0002}))
    over = DEFAULT_MAX_QUEUE + DEFAULT_WINDOW * DEFAULT_BATCH_MAX + 1000
    rt.ask("root/source", Burst(target="root/sink", count=1), timeout=30)
    rt.ask("root/sink", WaitSeen(count=1), timeout=30)  # the link is up: sends go on the wire

    with pytest.raises(ActorCrashed) as caught:
        rt.ask("root/source", Burst(target="root/sink", start=1, count=over), timeout=60)
    rt.wait_event("child_restarted", child_id="source", timeout=30)
    source = rt.ledger().by_actor["root/source"]
    in_flight = source.sent - source.dead_lettered
    accounted = rt.ask("root/sink", WaitAccounted(count=in_flight), timeout=60)
    ledger = rt.ledger()
    total = ledger.total
    unaccounted = total.sent - total.handled - total.undelivered - total.dead_lettered

    assert "Backpressure" in caught.value.reason
    assert DEFAULT_MAX_QUEUE < source.sent <= over
    assert 1 < in_flight < source.sent, source  # some went on the wire, most never did
    assert isinstance(accounted, Accounted)
    assert in_flight == len(accounted.seqs) + accounted.lost, accounted.lost
    assert accounted.lost == ledger.by_actor["root/sink"].dead_lettered
    assert 0 == unaccounted, total
    assert ledger.balanced, total
