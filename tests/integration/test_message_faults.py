"""Message faults at the seam, on both bases: drop, duplicate, delay, corrupt and raise hit
exactly the messages their trigger selects, are journalled, are counted by the ledger, and
stop when healed."""

from __future__ import annotations

import pytest

from actors import ActorCrashed, NotSupported, Runtime, UnderstudyError
from protocols.faults import MessageFault
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.conftest import BASES, StartTree
from tests.integration._fast_workers import Burst, Item, Seen, WaitSeen

W = "tests.integration._fast_workers"


def _tree() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="sink", start=f"{W}:Sink"),
            ChildSpec(id="source", start=f"{W}:Source"),
        ],
    )


def _burst(rt: object, count: int) -> None:
    rt.ask("root/source", Burst(target="root/sink", count=count), timeout=30)  # type: ignore[attr-defined]


def test_drop_every_third_message_is_journalled_and_counted(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        MessageFault(fault="drop", target="root/sink", message_kind="fast.item", every_nth=3)
    ) as fault:
        _burst(rt, 300)
        seen = rt.ask("root/sink", WaitSeen(count=200), timeout=30)
    journal = rt.faults.journal()
    ledger = rt.ledger()

    assert isinstance(seen, Seen)
    assert [s for s in range(300) if (s + 1) % 3] == seen.seqs
    mine = [e for e in journal.injected if e.fault_id == fault.id]
    assert list(range(3, 301, 3)) == [e.ordinal for e in mine]
    assert {("drop", "root/sink", "fast.item")} == {
        (e.fault, e.target, e.message_kind) for e in mine
    }
    assert 100 == ledger.total.dropped_by_fault
    assert ledger.balanced, ledger.total
    assert [] == journal.active


def test_duplicate_hands_the_message_to_the_handler_twice(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {"fault": "duplicate", "target": "root/sink", "message_kind": "fast.item", "nth": 5}
    ):
        _burst(rt, 10)
        seen = rt.ask("root/sink", WaitSeen(count=11), timeout=30)

    assert isinstance(seen, Seen)
    assert [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9] == seen.seqs


def test_delay_reorders_and_nothing_is_lost(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {
            "fault": "delay",
            "target": "root/sink",
            "message_kind": "fast.item",
            "nth": 1,
            "delay": {"fixed": 0.3},
        }
    ):
        _burst(rt, 50)
        seen = rt.ask("root/sink", WaitSeen(count=50), timeout=30)
    ledger = rt.ledger()

    assert isinstance(seen, Seen)
    assert list(range(50)) == sorted(seen.seqs)
    assert [*range(1, 50), 0] == seen.seqs
    assert ledger.balanced, ledger.total


def test_corrupt_makes_the_sender_get_a_message_invalid_error(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {"fault": "corrupt", "target": "root/sink", "message_kind": "fast.item", "nth": 1}
    ):
        with pytest.raises(UnderstudyError, match="corrupted by injected fault"):
            rt.ask("root/sink", Item(seq=1), timeout=10)
        rt.ask("root/sink", Item(seq=2), timeout=10)
    seen = rt.ask("root/sink", WaitSeen(count=1), timeout=10)

    assert Seen(seqs=[2]) == seen


def test_raise_crashes_the_worker_which_is_restarted(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {"fault": "raise", "target": "root/sink", "message_kind": "fast.item", "nth": 2}
    ):
        rt.ask("root/sink", Item(seq=1), timeout=10)
        with pytest.raises(ActorCrashed, match="InjectedFault"):
            rt.ask("root/sink", Item(seq=2), timeout=10)
        rt.wait_event("child_restarted", child_id="sink", timeout=10)

    assert "error:InjectedFault" in (rt.events()[-2].reason or "") or any(
        "InjectedFault" in (e.reason or "") for e in rt.events() if e.event == "child_exited"
    )


def test_a_healed_fault_hits_nothing_more(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    handle = rt.faults.inject({"fault": "drop", "target": "root/sink", "message_kind": "fast.item"})
    rt.tell("root/sink", Item(seq=1))  # a dropped ask would never be answered
    assert [1] == [e.ordinal for e in rt.faults.journal().injected]  # asked after the tell
    handle.heal()
    rt.ask("root/sink", Item(seq=2), timeout=10)
    seen = rt.ask("root/sink", WaitSeen(count=1), timeout=10)

    assert Seen(seqs=[2]) == seen
    assert [1] == [e.ordinal for e in rt.faults.journal().injected]


def test_the_same_seed_hits_the_same_messages(start_tree: StartTree) -> None:
    runs = []
    for _ in range(2):
        rt = start_tree(_tree())
        spec = {
            "fault": "drop",
            "target": "root/sink",
            "message_kind": "fast.item",
            "probability": 0.3,
            "seed": 4242,
        }
        with rt.faults.inject(spec):
            _burst(rt, 200)
            rt.ask("root/sink", WaitSeen(count=1), timeout=30)
            journal = rt.faults.journal()
            rt.ask("root/sink", WaitSeen(count=200 - len(journal.injected)), timeout=30)
        runs.append([e.ordinal for e in rt.faults.journal().injected])
        rt.shutdown()

    assert runs[0] == runs[1]
    assert 0 < len(runs[0]) < 200


@pytest.mark.parametrize("base", BASES)
def test_a_deployment_with_fault_injection_off_refuses_faults(
    base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    system = SystemConfig(
        base=base,  # type: ignore[arg-type]
        state_dir=str(tmp_path_factory.mktemp("state")),
        fault_injection=False,
    )
    with Runtime.start(Topology(system=system, root=_tree())) as rt:
        with pytest.raises(NotSupported, match=r"system\.fault_injection"):
            rt.faults.inject(MessageFault(fault="drop", target="root/sink"))
        _burst(rt, 10)
        seen = rt.ask("root/sink", WaitSeen(count=10), timeout=30)
        assert isinstance(seen, Seen)
        assert list(range(10)) == seen.seqs


def test_reorder_shuffles_each_window_and_loses_nothing(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {
            "fault": "reorder",
            "target": "root/sink",
            "message_kind": "fast.item",
            "window": 5,
            "seed": 3,
        }
    ):
        _burst(rt, 50)
        seen = rt.ask("root/sink", WaitSeen(count=50), timeout=30)
    assert isinstance(seen, Seen)
    assert list(range(50)) == sorted(seen.seqs)
    assert list(range(50)) != seen.seqs
    ledger = rt.ledger()
    assert ledger.balanced, ledger.total
    assert 0 == ledger.total.dropped_by_fault


def test_corrupt_truncated_bytes_fail_to_decode_and_are_counted(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject(
        {
            "fault": "corrupt",
            "corrupt": "truncated",
            "target": "root/sink",
            "message_kind": "fast.item",
            "every_nth": 4,
        }
    ):
        _burst(rt, 40)
        seen = rt.ask("root/sink", WaitSeen(count=30), timeout=30)
    assert isinstance(seen, Seen)
    assert [s for s in range(40) if (s + 1) % 4] == seen.seqs
    ledger = rt.ledger()
    assert 10 == ledger.total.dropped_by_fault
    assert ledger.balanced, ledger.total
