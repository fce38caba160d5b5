"""The link protocol (``actors.core.link``) under arbitrary loss, duplication, reordering,
delay and crashes of either side, as a Hypothesis state machine.

Safety, checked after every step: no message is handled twice (by any receiver incarnation);
within one pair of incarnations messages are handled in the order they were sent; a message
the sender was told was handled was handled, and one it reported undelivered was not.
Liveness, checked once the network is made reliable and drained: every message admitted by a
live sender was handled or reported undelivered, exactly one of the two; for a sender that was
killed, what the receiver handled plus what it counted lost never exceeds what was admitted,
and equals it when the sender's last announcement arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.core.link import OutFrame, ReceiveLink, SendLink


@dataclass
class Data:
    sender: int
    receiver: int
    seq: int
    low: int
    first: int
    items: list[int]
    sent: int
    admitted: int


@dataclass
class Ack:
    sender: int
    receiver: int
    acks: list[tuple[int, list[int]]]


@dataclass
class Receiver:
    incarnation: int
    links: dict[int, ReceiveLink[int]] = field(default_factory=dict)
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)
    order: dict[int, list[int]] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    accepting: bool = True
    crash_after: int | None = None
    """Killed (SIGKILL) after handling this many more messages, in the middle of a frame."""


class ReceiverKilled(Exception):
    pass


@dataclass
class Killed:
    admitted: list[int]
    complete: bool
    """The receiver heard the sender's last announcement and never refused anything."""


class LinkMachine(RuleBasedStateMachine):
    @initialize(window=st.integers(1, 4), batch_max=st.integers(1, 4))
    def start(self, window: int, batch_max: int) -> None:
        self.window, self.batch_max = window, batch_max
        self.now = 0.0
        self.next_item = 1
        self.network: list[Data | Ack] = []
        self.sender = 1
        self.link = self._new_link()
        self.admitted: dict[int, list[int]] = {1: []}
        self.receiver = Receiver(1)
        self.handled: dict[int, int] = {}  # item -> receiver incarnation that handled it
        self.told_handled: set[int] = set()
        self.undelivered: set[int] = set()
        self.killed: dict[int, Killed] = {}
        self.counted_lost: dict[int, int] = {}
        self.settled_handled: set[int] = set()
        self.refused_any = False

    def _new_link(self) -> SendLink[int]:
        return SendLink(window=self.window, batch_max=self.batch_max, resend_after=1.0)

    # --- the sender ---------------------------------------------------------------------------

    @rule(count=st.integers(1, 5))
    def admit(self, count: int) -> None:
        for _ in range(count):
            self.link.admit(self.next_item)
            self.admitted[self.sender].append(self.next_item)
            self.next_item += 1

    def _emit(self, frames: list[OutFrame[int]]) -> None:
        for frame in frames:
            self.network.append(
                Data(
                    self.sender,
                    self.receiver.incarnation,
                    frame.seq,
                    self.link.lowest,
                    frame.first,
                    list(frame.items),
                    self.link.sent,
                    self.link.admitted,
                )
            )

    @rule()
    def flush(self) -> None:
        self._emit(self.link.next_frames(self.now))

    @rule(dt=st.floats(0.1, 10.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        self._emit(self.link.due_frames(self.now))

    # --- the network --------------------------------------------------------------------------

    @precondition(lambda self: self.network)
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        """Deliver any packet (reordering); ``keep`` leaves a copy behind (duplication)."""
        index = data.draw(st.integers(0, len(self.network) - 1))
        packet = self.network[index] if keep else self.network.pop(index)
        self._deliver(packet)

    @precondition(lambda self: self.network)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        self.network.pop(data.draw(st.integers(0, len(self.network) - 1)))

    def _deliver(self, packet: Data | Ack) -> None:
        if isinstance(packet, Ack):
            if packet.sender != self.sender or packet.receiver != self.receiver.incarnation:
                return  # to an incarnation that is gone
            for seq, refused in packet.acks:
                result = self.link.acknowledge(seq, refused)
                if result is not None:
                    handled, lost = result
                    self.told_handled.update(handled)
                    self.undelivered.update(lost)
            return
        rx = self.receiver
        if packet.receiver != rx.incarnation or packet.sender in rx.settled:
            return
        link = rx.links.setdefault(packet.sender, ReceiveLink())
        ready, again = link.accept(
            packet.seq,
            packet.low,
            packet.first,
            packet.items,
            sent=packet.sent,
            admitted=packet.admitted,
        )
        acks = list(again)
        try:
            for delivery in ready:
                refused = self._handle(packet.sender, delivery.seq, delivery.items)
                acks.append(link.done(delivery.seq, refused))
        except ReceiverKilled:
            self.kill_receiver()
            return
        if acks:
            self.network.append(Ack(packet.sender, rx.incarnation, acks))

    def _handle(self, sender: int, seq: int, items: list[int]) -> list[int]:
        rx = self.receiver
        refused = []
        for position, item in enumerate(items):
            if not rx.accepting:
                self.refused_any = True
                refused.append(position)
                continue
            if rx.crash_after is not None:
                if rx.crash_after == 0:
                    raise ReceiverKilled
                rx.crash_after -= 1
            assert item not in self.handled, f"{item} handled twice"
            self.handled[item] = rx.incarnation
            rx.order.setdefault(sender, []).append(item)
            rx.marks[sender] = (seq, position + 1)
        return refused

    # --- crashes ------------------------------------------------------------------------------

    @rule()
    def receiver_exiting(self) -> None:
        self.receiver.accepting = False

    @rule(after=st.integers(0, 6))
    def arm_receiver_crash(self, after: int) -> None:
        self.receiver.crash_after = after

    @rule()
    def kill_receiver(self) -> None:
        mark = self.receiver.marks.get(self.sender, (0, 0))
        gone = self.link.receiver_gone(mark)
        self.told_handled.update(gone.handled)
        self.undelivered.update(gone.undelivered)
        self.receiver = Receiver(self.receiver.incarnation + 1)
        self.refused_any = False
        self.link = self._new_link()
        for item in gone.queued:  # never sent: they go to the next incarnation
            self.link.admit(item)

    @rule()
    def kill_sender(self) -> None:
        old = self.sender
        rx = self.receiver
        link = rx.links.get(old)
        heard = link.announced_admitted if link is not None else 0
        complete = heard == self.link.admitted and rx.accepting and not self.refused_any
        self.killed[old] = Killed(self.admitted[old], complete)
        rx.settled.add(old)
        lost = 0
        if link is not None:
            settlement = link.settle()
            rx.crash_after = None
            for delivery in settlement.deliveries:
                before = set(self.handled)
                self._handle(old, delivery.seq, delivery.items)
                self.settled_handled.update(set(self.handled) - before)
            lost = settlement.lost_in_flight + settlement.lost_queued
        self.counted_lost[old] = lost
        self.sender = old + 1
        self.refused_any = False
        self.admitted[self.sender] = []
        self.link = self._new_link()

    # --- properties ---------------------------------------------------------------------------

    @invariant()
    def safety(self) -> None:
        assert self.told_handled <= set(self.handled), "told handled but not handled"
        assert not (self.undelivered & set(self.handled)), "reported undelivered but handled"
        for sender, order in self.receiver.order.items():
            in_order = [item for item in order if item not in self.settled_handled]
            assert in_order == sorted(in_order), f"out of order from sender {sender}: {order}"

    def teardown(self) -> None:
        if not hasattr(self, "link"):
            return
        self.receiver.crash_after = None  # a reliable network, drained, no more crashes
        for _ in range(10_000):
            if self.network:
                self._deliver(self.network.pop(0))
                continue
            self._emit(self.link.next_frames(self.now))
            if self.network:
                continue
            if not self.link.inflight:
                break
            self.now += 100.0
            self._emit(self.link.due_frames(self.now))
        assert not self.link.inflight and not self.link.queue, "the link never drained"
        handled = set(self.handled)
        for item in self.admitted[self.sender]:
            assert (item in handled) != (item in self.undelivered), (
                f"{item}: handled={item in handled} undelivered={item in self.undelivered}"
            )
        for old, killed in self.killed.items():
            accounted = (
                sum(1 for item in killed.admitted if item in handled or item in self.undelivered)
                + self.counted_lost[old]
            )
            assert accounted <= len(killed.admitted), f"sender {old}: over-counted"
            if killed.complete:
                assert accounted == len(killed.admitted), f"sender {old}: not accounted for"


LinkMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestLinkProtocol = LinkMachine.TestCase
