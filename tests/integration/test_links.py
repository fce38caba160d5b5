"""Exactly once per link, on real processes (multiprocTCPBase): frames Thespian loses are
resent and handled once; a receiver SIGKILLed mid-stream leaves neither losses nor duplicates;
a sender SIGKILLed mid-stream leaves a dead-letter count that accounts for every message.

The pure protocol is checked under every interleaving in ``tests/property/test_link_model``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors import Runtime
from protocols.topology import ChildSpec, LinkConfig, SupervisorSpec, SystemConfig, Topology
from tests.integration._fast_workers import (
    Accounted,
    Burst,
    GetPid,
    Pid,
    Seen,
    WaitAccounted,
    WaitDrained,
    WaitSeen,
)

pytestmark = pytest.mark.integration

W = "tests.integration._fast_workers"
Start = Callable[..., Runtime]


@pytest.fixture
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    started: list[Runtime] = []

    def run(
        sink: dict[str, object], source: dict[str, object], *, killable: bool = False
    ) -> Runtime:
        root = SupervisorSpec(
            id="root",
            intensity=10,
            children=[
                ChildSpec(id="sink", start=f"{W}:LossySink", args=sink),
                ChildSpec(
                    id="source",
                    start=f"{W}:KillableSource" if killable else f"{W}:LossySource",
                    args=source,
                ),
            ],
        )
        system = SystemConfig(
            base="multiprocTCPBase",
            state_dir=str(tmp_path_factory.mktemp("state")),
            links=LinkConfig(resend_after=0.05, resend_max=1.0),
        )
        runtime = Runtime.start(Topology(system=system, root=root))
        started.append(runtime)
        return runtime

    yield run
    for runtime in started:
        runtime.shutdown()


def test_frames_lost_inside_thespian_are_resent_and_handled_once(start: Start) -> None:
    """The sender's transport loses every 4th data frame, the receiver's every 3rd
    acknowledgement: every item is handled once, in order, and the ledger shows the resends
    and the duplicates dropped."""
    rt = start({"lose_every": 3}, {"lose_every": 4})
    total = 3000

    for first in range(0, total, 100):
        rt.ask("root/source", Burst(target="root/sink", start=first, count=100), timeout=30)
    seen = rt.ask("root/sink", WaitSeen(count=total), timeout=60)
    ledger = rt.ledger()

    assert isinstance(seen, Seen)
    assert list(range(total)) == seen.seqs
    assert ledger.total.resent > 0, ledger.total
    assert ledger.total.duplicates_dropped > 0, ledger.total
    assert total == ledger.by_actor["root/sink"].handled
    assert ledger.balanced, ledger.total


def test_a_receiver_killed_mid_stream_leaves_neither_losses_nor_duplicates(
    start: Start, tmp_path: Path
) -> None:
    """The receiver SIGKILLs itself while handling item 1500 of a stream: its handled marks
    tell the sender exactly which items in flight it had handled. What it handled, what the
    sender was told was undelivered and what its successor handles are all the items, once."""
    journal = tmp_path / "sink.journal"
    sink = {"kill_on": 1500, "marker": str(tmp_path / "killed"), "journal": str(journal)}
    rt = start(sink, {})
    total = 4000

    rt.ask("root/source", Burst(target="root/sink", count=total), timeout=30)
    rt.wait_event("child_restarted", child_id="sink", timeout=10)
    # The guardian tells the sender of the kill in its own time: wait until nothing it sent
    # is unaccounted for.
    undelivered = rt.ask("root/source", WaitDrained(target="root/sink"), timeout=30)
    assert isinstance(undelivered, Seen)
    before = [int(line) for line in journal.read_text().split()]
    final = rt.ask(
        "root/sink", WaitSeen(count=total - len(before) - len(undelivered.seqs)), timeout=30
    )
    assert isinstance(final, Seen)

    assert list(range(1500)) == before
    assert 1500 in undelivered.seqs
    assert final.seqs == sorted(final.seqs)
    assert list(range(total)) == sorted([*before, *undelivered.seqs, *final.seqs])


def test_a_sender_killed_mid_stream_leaves_a_report_that_accounts_for_every_message(
    start: Start,
) -> None:
    """A slow receiver, a sender SIGKILLed with most of a burst still queued: the receiver
    handles what arrived (in order, once) and dead-letters the rest on the sender's behalf;
    together they are the whole burst."""
    rt = start({"work": 0.0005}, {}, killable=True)
    total = 20_000
    pid = rt.ask("root/source", GetPid(), timeout=10)
    assert isinstance(pid, Pid)

    rt.ask("root/source", Burst(target="root/sink", count=total), timeout=30)
    rt.ask("root/sink", WaitSeen(count=100), timeout=30)
    os.kill(pid.pid, signal.SIGKILL)
    accounted = rt.ask("root/sink", WaitAccounted(count=total), timeout=60)
    assert isinstance(accounted, Accounted)
    sink = rt.ledger().by_actor["root/sink"]

    assert list(range(len(accounted.seqs))) == accounted.seqs
    assert 0 < accounted.lost
    assert total == len(accounted.seqs) + accounted.lost
    assert accounted.lost == sink.dead_lettered
