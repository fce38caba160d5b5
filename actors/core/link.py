"""The data-path link protocol, pure (no Thespian): the seam drives it, tests drive it directly.

One *link* carries messages from one sender incarnation to one receiver incarnation:

* the sender numbers its frames (``seq`` 1, 2, ...) and its messages (ordinals 1, 2, ...);
  at most ``window`` frames past the lowest unacknowledged one are in flight;
* the receiver hands frames to its handler in ``seq`` order, each once: a frame that arrives
  early waits in a buffer, a duplicate (a resend whose acknowledgement was lost, or a frame
  Thespian delivered twice) is dropped and acknowledged again;
* the receiver acknowledges a frame after its handler ran, naming the positions it refused
  (it was exiting: they were not handled);
* the sender resends a frame not acknowledged within ``resend_after`` seconds, backing off
  (doubling) up to ``resend_max``, for as long as the receiver's incarnation lives;
* when the receiver's incarnation is gone, its *handled mark* (``seq``, ``n``: every frame
  below ``seq`` handled, and the first ``n`` messages of frame ``seq``) tells the sender
  exactly which messages in flight were handled; the others are reported undelivered;
* when the sender's incarnation is gone, the receiver handles what it buffered and counts
  what the sender owed it but never arrived: those are dead letters, counted on the dead
  sender's behalf. What it owed is final once the sender's *owed count* is known (its bye, or
  its sent counts read after its process ended: what it sent, plus what it had queued unless
  it dead-lettered those itself); until then it is what the frames announced (``sent`` /
  ``admitted`` ordinals carried by every frame), which a frame lost at the sender's exit
  makes too low and an orderly exit's own dead letters make too high.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_RESEND_AFTER",
    "DEFAULT_RESEND_MAX",
    "Delivery",
    "GoneReport",
    "OutFrame",
    "ReceiveLink",
    "SendLink",
    "Settlement",
]

Item = TypeVar("Item")

DEFAULT_RESEND_AFTER = 0.5
DEFAULT_RESEND_MAX = 8.0


@dataclass(slots=True)
class OutFrame(Generic[Item]):
    """A frame the sender handed to the transport and keeps until it is acknowledged."""

    seq: int
    first: int
    """The ordinal of ``items[0]`` on this link."""
    items: list[Item]
    due: float
    """When to resend it if no acknowledgement came."""
    sent_at: float = 0.0
    attempts: int = 0
    """Resends so far."""
    payload: object = None
    """The encoded frame (the seam caches it here to resend the same bytes)."""


@dataclass(slots=True)
class GoneReport(Generic[Item]):
    """What a sender learns about its frames in flight when the receiver's incarnation ended."""

    handled: list[Item]
    undelivered: list[Item]
    queued: list[Item]
    """Never sent: the caller decides (re-route to the next incarnation, or dead-letter)."""


class SendLink(Generic[Item]):
    """The sender's half of one link."""

    def __init__(
        self,
        *,
        window: int,
        batch_max: int,
        resend_after: float = DEFAULT_RESEND_AFTER,
        resend_max: float = DEFAULT_RESEND_MAX,
    ) -> None:
        if window < 1 or batch_max < 1:
            msg = f"window and batch_max must be >= 1, got {window} and {batch_max}"
            raise ValueError(msg)
        if not 0 < resend_after <= resend_max:
            msg = f"need 0 < resend_after <= resend_max, got {resend_after} and {resend_max}"
            raise ValueError(msg)
        self.window = window
        self.batch_max = batch_max
        self.resend_after = resend_after
        self.resend_max = resend_max
        self.queue: deque[Item] = deque()
        self.inflight: dict[int, OutFrame[Item]] = {}
        self.next_seq = 1
        self.admitted = 0
        """Ordinal of the last message admitted (queued) on this link."""
        self.sent = 0
        """Ordinal of the last message handed to the transport."""
        self.srtt: float | None = None
        """Smoothed time from sending a frame to its acknowledgement (first sends only)."""

    @property
    def timeout(self) -> float:
        """How long a new frame waits for its acknowledgement before it is sent again: twice
        the smoothed acknowledgement time (a slow receiver acknowledges late), at least
        ``resend_after``, at most ``resend_max``."""
        if self.srtt is None:
            return self.resend_after
        return min(self.resend_max, max(self.resend_after, 2 * self.srtt))

    def admit(self, item: Item) -> None:
        """Queue ``item`` for sending."""
        self.queue.append(item)
        self.admitted += 1

    @property
    def unacknowledged(self) -> int:
        """Messages admitted that the receiver has not acknowledged yet (queued or in flight)."""
        return len(self.queue) + sum(len(frame.items) for frame in self.inflight.values())

    @property
    def lowest(self) -> int:
        """The lowest unacknowledged frame (``next_seq`` when none is in flight)."""
        return min(self.inflight) if self.inflight else self.next_seq

    def next_frames(self, now: float) -> list[OutFrame[Item]]:
        """Take the frames the window allows now (each up to ``batch_max`` messages)."""
        frames: list[OutFrame[Item]] = []
        limit = self.lowest + self.window
        while self.queue and self.next_seq < limit:
            count = min(self.batch_max, len(self.queue))
            items = [self.queue.popleft() for _ in range(count)]
            frame = OutFrame(self.next_seq, self.sent + 1, items, now + self.timeout, now)
            self.inflight[frame.seq] = frame
            self.next_seq += 1
            self.sent += count
            frames.append(frame)
        return frames

    def due_frames(self, now: float) -> list[OutFrame[Item]]:
        """The frames to resend now; each is re-armed with a doubled timeout (capped)."""
        due = [frame for frame in self.inflight.values() if frame.due <= now]
        for frame in due:
            frame.attempts += 1
            frame.due = now + min(self.timeout * 2**frame.attempts, self.resend_max)
        return sorted(due, key=lambda frame: frame.seq)

    def next_due(self) -> float | None:
        """When the next resend falls due (None: nothing in flight)."""
        return min((frame.due for frame in self.inflight.values()), default=None)

    def acknowledge(
        self, seq: int, refused: Iterable[int], now: float | None = None
    ) -> tuple[list[Item], list[Item]] | None:
        """Frame ``seq`` was handled except the ``refused`` positions (at ``now``: timed, for
        the resend timeout, when it was sent once only).

        Returns (handled, refused items), or None for an acknowledgement already seen.
        """
        frame = self.inflight.pop(seq, None)
        if frame is None:
            return None
        if now is not None and frame.attempts == 0:
            sample = max(0.0, now - frame.sent_at)
            self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
        out = set(refused)
        handled = [item for i, item in enumerate(frame.items) if i not in out]
        lost = [item for i, item in enumerate(frame.items) if i in out]
        return handled, lost

    def receiver_gone(self, mark: tuple[int, int] | None) -> GoneReport[Item]:
        """The receiver's incarnation ended; ``mark`` is its handled mark for this link.

        ``None`` means no mark is known (the receiver left none): every message in flight is
        then reported undelivered, the only safe answer without one. With ``(0, 0)`` the
        receiver handled nothing from this link.
        """
        handled: list[Item] = []
        undelivered: list[Item] = []
        for seq in sorted(self.inflight):
            items = self.inflight[seq].items
            if mark is None or seq > mark[0]:
                undelivered += items
            elif seq < mark[0]:
                handled += items
            else:
                handled += items[: mark[1]]
                undelivered += items[mark[1] :]
        self.inflight.clear()
        queued = list(self.queue)
        self.queue.clear()
        return GoneReport(handled, undelivered, queued)

    def take_queue(self) -> list[Item]:
        """Remove and return what was never sent."""
        queued = list(self.queue)
        self.queue.clear()
        return queued


@dataclass(slots=True)
class Delivery(Generic[Item]):
    """A frame ready for the receiver's handler."""

    seq: int
    first: int
    items: list[Item]


@dataclass(slots=True)
class Settlement(Generic[Item]):
    """What a receiver does when the sender's incarnation is gone."""

    deliveries: list[Delivery[Item]]
    """Frames that arrived after a gap: handled now, out of order (nobody will fill the gap)."""
    lost_in_flight: int
    """Messages the sender had sent that never arrived."""
    lost_queued: int
    """Messages the sender had queued and never sent (it announced them)."""


@dataclass
class ReceiveLink(Generic[Item]):
    """The receiver's half of one link (one sender incarnation)."""

    max_buffered: int = 1024
    expected: int | None = None
    """The next frame to hand to the handler."""
    buffered: dict[int, Delivery[Item]] = field(default_factory=dict)
    refusals: dict[int, list[int]] = field(default_factory=dict)
    """Refused positions of handled frames the sender may not have heard about yet."""
    low: int = 0
    """The sender's lowest unacknowledged frame, as last announced."""
    received: int = 0
    """Messages handed to the handler (or refused) so far."""
    announced_sent: int = 0
    announced_admitted: int = 0
    owed: int | None = None
    """The gone sender's final count of messages this link must account for (from its bye
    or its sent counts); it overrides whatever frames announced, before or after."""
    orderly: bool = False
    """The sender exited in order: it dead-lettered what it never sent itself."""
    duplicates: int = 0
    """Duplicate messages dropped."""

    def accept(
        self,
        seq: int,
        low: int,
        first: int,
        items: list[Item],
        *,
        sent: int = 0,
        admitted: int = 0,
    ) -> tuple[list[Delivery[Item]], list[tuple[int, list[int]]]]:
        """Take frame ``seq``; return the frames to hand to the handler now (in order) and the
        acknowledgements to send again (for a duplicate of a frame already handled)."""
        self.announced_sent = max(self.announced_sent, sent, first + len(items) - 1)
        self.announced_admitted = max(self.announced_admitted, admitted, self.announced_sent)
        if low > self.low:
            self.low = low
            for old in [s for s in self.refusals if s < low]:
                del self.refusals[old]
        if self.expected is None:
            self.expected = low
        if seq < self.expected:
            self.duplicates += len(items)
            return [], [(seq, self.refusals.get(seq, []))]
        if seq in self.buffered:
            self.duplicates += len(items)
            return [], []
        if seq - self.expected >= self.max_buffered:
            return [], []  # too far ahead: the sender resends it later
        self.buffered[seq] = Delivery(seq, first, items)
        ready: list[Delivery[Item]] = []
        while self.expected in self.buffered:
            ready.append(self.buffered.pop(self.expected))
            self.expected += 1
        self.received += sum(len(d.items) for d in ready)
        return ready, []

    def done(self, seq: int, refused: list[int]) -> tuple[int, list[int]]:
        """Frame ``seq`` went through the handler; return its acknowledgement."""
        if refused:
            self.refusals[seq] = refused
        return seq, refused

    def announce(self, sent: int, admitted: int) -> None:
        """The sender says how many messages it has sent and queued on this link so far (it
        does when its window is full and its queue grew: a killed sender's queue is counted)."""
        self.announced_sent = max(self.announced_sent, sent)
        self.announced_admitted = max(self.announced_admitted, admitted, self.announced_sent)

    def bye(self, sent: int) -> None:
        """The sender said it exits in order after sending ``sent`` messages on this link; it
        dead-letters what it never sent itself."""
        self.gone(sent, orderly=True)

    def gone(self, owed: int | None, *, orderly: bool) -> None:
        """The sender's incarnation is gone; it owed this link ``owed`` messages in all (None:
        unknown). ``orderly``: it exited in order, so ``owed`` is what it sent (it dead-lettered
        its queue itself); else it was killed and ``owed`` includes what it had queued.

        Either the bye or the sender's sent counts (read after its process ended) may come
        first, or alone; both give the same count.
        """
        self.orderly = self.orderly or orderly
        if owed is not None:
            self.owed = owed
            if orderly:
                self.announced_sent = max(self.announced_sent, owed)

    @property
    def complete(self) -> bool:
        """Everything the gone sender owed has arrived (nothing left to wait for)."""
        return self.owed is not None and not self.buffered and self.received >= self.owed

    def settle(self) -> Settlement[Item]:
        """The sender's incarnation is gone: hand over what was buffered and count the rest."""
        deliveries = [self.buffered[seq] for seq in sorted(self.buffered)]
        self.buffered.clear()
        arrived = self.received + sum(len(d.items) for d in deliveries)
        self.received = arrived
        if self.owed is not None:
            owed = self.owed
        elif self.orderly:
            owed = self.announced_sent  # its queue is its own dead letters
        else:
            owed = self.announced_admitted
        sent = min(self.announced_sent, owed)
        return Settlement(
            deliveries,
            lost_in_flight=max(0, sent - arrived),
            lost_queued=max(0, owed - max(sent, arrived)),
        )
