"""The message seam: THE one adapter between Thespian and Understudy.

Every message an Understudy actor sends or receives passes through :class:`SeamActor`:

* ``receiveMessage`` (Thespian's camelCase stops here) decodes a frame of msgpack envelopes
  and hands each message to ``on_message`` in order; Thespian's own system messages become
  ``on_child_exited`` / ``on_wakeup`` / ``on_exit_request`` calls;
* bad bytes, unknown kinds, invalid fields and oversized frames get a typed ``ErrorReply`` to
  the sender and a ``message_rejected`` log event; they never crash the receiver;
* no exception ever reaches Thespian (which would retry the message and keep the actor alive,
  see ``actors.core.workarounds``): an error in Understudy's own code goes to ``on_internal_error``;
* ``send_message`` sends one control message at once; ``link_send`` is the data path.

The data path (the fast path)
    Messages an actor sends to the same destination while one Thespian message is being
    handled travel together as ONE frame (up to ``batch_max`` envelopes); frames are flushed
    when the handler returns, or as soon as ``batch_max`` envelopes are waiting, so a lone
    message is never held back beyond the end of the handler that sent it. Each destination
    is a *link* with credits: at most ``window`` frames in flight; the receiver acknowledges
    every frame (piggybacked on its own frames to the sender when it has some), naming the
    envelopes it did NOT hand to its handler (it crashed or was exiting). Beyond the window,
    messages wait in the link's queue (bounded by ``max_queue``: past it ``link_send`` raises
    ``Backpressure``). Frames still unacknowledged when the destination is known to be gone
    are reported undelivered (``on_undelivered``), never silently dropped; per link, order is
    preserved and nothing is delivered twice.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeAlias

import structlog
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    ChildActorExited,
    DeadEnvelope,
    PoisonMessage,
    WakeupMessage,
)
from thespian.system.addressManager import ActorLocalAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from actors.core import transport_guard
from actors.core.keyring import Keyring
from actors.core.ledger import Ledger
from actors.errors import Backpressure
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import ActorRef
from protocols.common import ErrorName, ErrorReply
from protocols.errors import CodecError

__all__ = [
    "ASK_META",
    "DEFAULT_BATCH_MAX",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_WINDOW",
    "NO_META",
    "Address",
    "FrameMeta",
    "Link",
    "SeamActor",
    "decode_reply",
    "encode_external",
    "open_system",
    "pack_address",
    "spawn_global",
    "unpack_address",
]

log = structlog.get_logger("understudy.seam")

Address: TypeAlias = ActorAddress
"""An actor's address (Thespian's, opaque outside this module)."""


def open_system(
    base: str,
    capabilities: dict[str, Any],
    *,
    transient: bool = True,
    keyring: Keyring | None = None,
    listen: str = "127.0.0.1",
    max_frame: int = codec.DEFAULT_MAX_SIZE,
) -> Any:
    """Start (``transient``: a fresh one) or join the ActorSystem of ``base``; return it.

    A multiprocTCPBase system is guarded first (``actors.core.transport_guard``): every socket
    binds ``listen`` and every frame is tagged with ``keyring``'s current key.

    Raises:
        ValueError: a multiprocTCPBase system without a keyring.
    """
    if base == "multiprocTCPBase":
        if keyring is None:
            msg = "a multiprocTCPBase system needs the deployment secret (a Keyring)"
            raise ValueError(msg)
        transport_guard.install(listen=listen, keyring=keyring, max_frame=max_frame + _FRAME_SLACK)
        from actors.core.workarounds import tune_transport_backoff  # it imports this module

        tune_transport_backoff()
    return ActorSystem(base, capabilities, transientUnique=transient)


# Thespian's own envelope (sender address, message class) around Understudy's frame bytes.
_FRAME_SLACK = 64 * 1024


def spawn_global(system: Any, actor_class: type, name: str) -> Address:
    """Create (or find) the actor ``name`` of ``system``, an instance of ``actor_class``."""
    address: Address = system.createActor(actor_class, globalName=name)
    return address


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """The header of one frame: what the seam and the Runtime read besides its envelopes.

    On the wire it is a msgpack map with short keys (declared here and nowhere else).
    """

    link: int | None = None
    """The frame's sequence number on its data-path link (``"l"``); None off the data path."""
    acks: list[list[Any]] | None = None
    """Acknowledged frames of the reverse link, ``[seq, [refused ids]]`` each (``"a"``)."""
    events: tuple[str, int] | None = None
    """A supervisor's (incarnation, events sent) when it answered (``"ev"``)."""
    ask: bool = False
    """An ask from outside the actors: always answered, Ok if the handler returns nothing."""

    def to_wire(self) -> dict[str, Any] | None:
        """Return the msgpack map for this header (None when it carries nothing)."""
        wire: dict[str, Any] = {}
        if self.link is not None:
            wire[_LINK] = self.link
        if self.acks is not None:
            wire[_ACKS] = self.acks
        if self.events is not None:
            wire[_EVENTS] = list(self.events)
        if self.ask:
            wire[_ASK] = 1
        return wire or None

    @classmethod
    def from_wire(cls, wire: dict[str, Any] | None) -> FrameMeta:
        """Return the header a frame carried (``NO_META`` for none)."""
        if not wire:
            return NO_META
        events = wire.get(_EVENTS)
        return cls(
            link=wire.get(_LINK),
            acks=wire.get(_ACKS),
            events=(str(events[0]), int(events[1])) if events else None,
            ask=bool(wire.get(_ASK)),
        )


_LINK, _ACKS, _EVENTS, _ASK = "l", "a", "ev", "ask"
NO_META = FrameMeta()
ASK_META = FrameMeta(ask=True)


def decode_reply(
    raw: bytes, message_id: int, *, max_size: int
) -> tuple[codec.Envelope, FrameMeta] | None:
    """Return the envelope of frame ``raw`` answering ``message_id`` and the frame's header.

    None when the frame answers another request (or cannot be decoded: logged).
    """
    try:
        wire, envelopes = codec.decode_frame(raw, max_size=max_size)
    except CodecError as exc:
        log.warning("reply_undecodable", error=str(exc))
        return None
    for env in envelopes:
        if isinstance(env, codec.Envelope) and env.correlation_id == message_id:
            return env, FrameMeta.from_wire(wire)
    return None


def encode_external(
    message: Message, *, message_id: int, ask: bool, max_size: int = codec.DEFAULT_MAX_SIZE
) -> bytes:
    """Frame a message sent from outside the actors (the Runtime): an ask is marked so that
    the receiver always answers it (Ok when its handler returns nothing)."""
    return codec.encode_frame(
        [codec.envelope_parts(message, message_id)],
        meta=ASK_META.to_wire() if ask else None,
        max_size=max_size,
    )


_TIMER_WAKEUP = "understudy.timer"
_TIMER_SLACK = 0.001
_timer_ids = itertools.count(1)

DEFAULT_BATCH_MAX = 512
DEFAULT_WINDOW = 8
DEFAULT_MAX_QUEUE = 100_000


@dataclass
class Link:
    """The data path to one destination: queued envelopes, frames in flight, counters."""

    address: ActorAddress
    label: str
    queue: deque[tuple[list[Any], Message]] = field(default_factory=deque)
    inflight: dict[int, list[tuple[int, Message]]] = field(default_factory=dict)
    next_seq: int = 1
    sent: int = 0
    acknowledged: int = 0
    undelivered: int = 0


def pack_address(address: ActorAddress) -> ActorRef:
    """Return a Thespian address as an ``ActorRef`` for a message field (never pickle bytes).

    Raises:
        ValueError: the address is of a kind Understudy does not send (a child not created yet,
            a routed convention address).
    """
    details = address.addressDetails
    if isinstance(details, ActorLocalAddress):
        useable = details.addressManager.exportAddr(address)
        if useable is None:
            msg = f"the address of an actor that is not created yet cannot be sent: {address}"
            raise ValueError(msg)
        details = useable.addressDetails
    if isinstance(details, str):
        return ActorRef(name=details)
    if type(details) is TCPv4ActorAddress:
        host, port = details.sockname[:2]
        return ActorRef(host=host, port=port)
    msg = f"cannot send an address of type {type(details).__name__}: {address}"
    raise ValueError(msg)


def unpack_address(ref: ActorRef) -> ActorAddress:
    """Return the Thespian address that :func:`pack_address` described."""
    if ref.name is not None:
        return ActorAddress(ref.name)
    return ActorAddress(TCPv4ActorAddress(ref.host, ref.port, external=True))


class SeamActor(Actor):  # type: ignore[misc]  # thespian is untyped
    """Base of every Understudy actor: decode in, encode out, never raise into Thespian."""

    max_message_size: int = codec.DEFAULT_MAX_SIZE
    batch_max: int = DEFAULT_BATCH_MAX
    window: int = DEFAULT_WINDOW
    max_queue: int = DEFAULT_MAX_QUEUE
    counts_handled: bool = False
    """True for actors that count ``handled`` themselves (when the handler really ran); the
    others count a data-path message handled once ``on_message`` has taken it."""

    _links: dict[str, Link]
    _acks_due: dict[str, tuple[ActorAddress, list[list[Any]]]]
    _waiting: set[str]
    _timers: list[tuple[float, int, Any]]
    _armed: list[float]
    _cancelled: set[int]

    @property
    def ledger(self) -> Ledger:
        """This incarnation's message ledger (``protocols.ledger``)."""
        if "_ledger" not in self.__dict__:
            self._ledger = Ledger()
        return self._ledger

    def _ensure_links(self) -> None:
        if "_links" not in self.__dict__:
            self._links = {}
            self._acks_due = {}
            self._waiting = set()  # keys of links with queued messages

    # --- Thespian entry point -------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        """Dispatch one Thespian message; see the module doc."""
        try:
            if isinstance(message, bytes):
                self._receive_frame(message, sender)
            elif isinstance(message, ChildActorExited):
                self.on_child_exited(message.childAddress)
            elif isinstance(message, WakeupMessage):
                if message.payload == _TIMER_WAKEUP:
                    self._fire_timers()
                else:
                    self.on_wakeup(message.payload)
            elif isinstance(message, ActorExitRequest):
                self.on_exit_request()
            elif isinstance(message, PoisonMessage):
                log.warning("message_poisoned", actor=self.describe(), details=str(message.details))
            elif isinstance(message, DeadEnvelope):
                self.on_dead_letter(message.deadAddress, message.deadMessage)
            elif type(message).__module__.startswith("thespian."):
                log.debug("thespian_message_ignored", type=type(message).__name__)
            else:
                log.warning(
                    "unexpected_message", actor=self.describe(), type=type(message).__name__
                )
                self.send_message(
                    sender,
                    ErrorReply(
                        error=ErrorName.DECODE_ERROR,
                        message="expected an Understudy frame (bytes), got "
                        f"{type(message).__name__}",
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - nothing may reach Thespian's retry
            self.on_internal_error(exc)
        try:
            self.flush_links()
        except Exception as exc:  # noqa: BLE001 - nothing may reach Thespian's retry
            self.on_internal_error(exc)

    def _receive_frame(self, data: bytes, sender: ActorAddress) -> None:
        try:
            meta, envelopes = codec.decode_frame(data, max_size=self.max_message_size)
        except CodecError as exc:
            log.warning(
                "message_rejected", actor=self.describe(), error=type(exc).__name__, detail=str(exc)
            )
            self.ledger.count("rejected", str(sender), "?")
            self.send_message(sender, ErrorReply(error=type(exc).__name__, message=str(exc)))
            return
        header = FrameMeta.from_wire(meta)
        link_seq = header.link
        if header.acks is not None:
            self._on_acks(sender, header.acks)
        refused: list[int] = []
        for env in envelopes:
            if isinstance(env, codec.BadEnvelope):
                log.warning(
                    "message_rejected",
                    actor=self.describe(),
                    error=type(env.error).__name__,
                    kind=env.kind,
                    detail=str(env.error),
                )
                self.ledger.count("rejected", str(sender), str(env.kind))
                text = getattr(env.error, "kind", None) or str(env.error)
                self.send_message(
                    sender,
                    ErrorReply(error=type(env.error).__name__, message=str(text)),
                    correlation_id=env.message_id,
                )
                continue
            if link_seq is not None:
                if not self.accepting():
                    refused.append(env.message_id)
                    continue
                self.ledger.count("delivered", str(sender), env.message.kind)
            self.on_message(env, sender, header)
            if link_seq is not None and not self.counts_handled:
                self.ledger.count("handled", str(sender), env.message.kind)
        if link_seq is not None:
            self._ensure_links()
            key = str(sender)
            due = self._acks_due.get(key)
            if due is None:
                self._acks_due[key] = (sender, [[link_seq, refused]])
            else:
                due[1].append([link_seq, refused])

    # --- Actors: create, stop, name ---------------------------------------------------------

    @property
    def self_address(self) -> Address:
        """This actor's own address."""
        address: Address = self.myAddress
        return address

    def spawn(self, actor_class: type[SeamActor]) -> Address:
        """Create a child actor (its own process on the multi-process bases); return its address."""
        address: Address = self.createActor(actor_class)
        return address

    def stop_actor(self, address: Address) -> None:
        """Ask Thespian to stop the actor at ``address`` (no orderly cleanup: a kill)."""
        self.send(address, ActorExitRequest())

    # --- Sending ------------------------------------------------------------------------

    def send_message(
        self,
        to: ActorAddress,
        message: Message,
        *,
        correlation_id: int | None = None,
        meta: FrameMeta | None = None,
    ) -> int:
        """Encode ``message`` and send it to ``to``; return its message id."""
        mid = codec.new_message_id()
        data = codec.encode_frame(
            [codec.envelope_parts(message, mid, correlation_id)],
            meta=meta.to_wire() if meta is not None else None,
            max_size=self.max_message_size,
        )
        self.send(to, data)
        return mid

    def link_send(
        self,
        to: ActorAddress,
        message: Message,
        *,
        correlation_id: int | None = None,
        label: str = "",
        message_id: int | None = None,
    ) -> int:
        """Queue ``message`` on the data path to ``to``; return its message id.

        A ``message_id`` re-queues a message that was already admitted (it keeps its id, which
        a request may be awaiting, and is not counted against ``max_queue`` again).

        Raises:
            Backpressure: ``max_queue`` messages already wait for this destination.
        """
        self._ensure_links()
        key = str(to)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = Link(to, label or key)
        if message_id is None and len(link.queue) >= self.max_queue:
            msg = (
                f"{len(link.queue)} messages already wait for {link.label} "
                f"(max_queue={self.max_queue}); it is slower than its senders"
            )
            raise Backpressure(msg)
        if message_id is None:
            self.ledger.count("sent", link.label, message.kind)
        mid = codec.new_message_id() if message_id is None else message_id
        link.queue.append((codec.envelope_parts(message, mid, correlation_id), message))
        self._waiting.add(key)
        if len(link.queue) >= self.batch_max:
            self._flush_link(key, link)
        return mid

    def flush_links(self) -> None:
        """Send what the links can send now, and the acknowledgements due."""
        if "_links" not in self.__dict__:
            return
        for key in list(self._waiting):
            link = self._links.get(key)
            if link is not None and link.queue:
                self._flush_link(key, link)
            if link is None or not link.queue:
                self._waiting.discard(key)
        if self._acks_due:
            due, self._acks_due = self._acks_due, {}
            for address, acks in due.values():
                self.send(
                    address,
                    codec.encode_frame([], meta={_ACKS: acks}, max_size=self.max_message_size),
                )

    def _flush_link(self, key: str, link: Link) -> None:
        while link.queue and len(link.inflight) < self.window:
            count = min(self.batch_max, len(link.queue))
            batch = [link.queue.popleft() for _ in range(count)]
            seq = link.next_seq
            link.next_seq += 1
            meta: dict[str, Any] = {_LINK: seq}
            due = self._acks_due.pop(key, None)
            if due is not None:
                meta[_ACKS] = due[1]
            data = codec.encode_frame(
                [parts for parts, _ in batch], meta=meta, max_size=self.max_message_size
            )
            link.inflight[seq] = [(parts[1], message) for parts, message in batch]
            link.sent += count
            self.send(link.address, data)

    def _on_acks(self, sender: ActorAddress, acks: list[list[Any]]) -> None:
        self._ensure_links()
        link = self._links.get(str(sender))
        if link is None:
            return
        for seq, refused in acks:
            batch = link.inflight.pop(seq, None)
            if batch is None:
                continue
            link.acknowledged += len(batch) - len(refused)
            if refused:
                ids = set(refused)
                lost = [(mid, message) for mid, message in batch if mid in ids]
                self._report_undelivered(link, lost, "the receiver was exiting")

    def queued_ids(self, address: ActorAddress) -> set[int]:
        """The ids of the messages queued (not yet sent) for ``address``."""
        self._ensure_links()
        link = self._links.get(str(address))
        return {parts[1] for parts, _ in link.queue} if link is not None else set()

    def take_unsent(self) -> list[tuple[str, Message]]:
        """Remove and return every message still queued (never sent) on the data path, with
        its link's label (the actor is going away: they will not be sent)."""
        if "_links" not in self.__dict__:
            return []
        unsent = []
        for link in self._links.values():
            unsent += [(link.label, message) for _, message in link.queue]
            link.queue.clear()
        self._waiting.clear()
        return unsent

    def fail_link(self, address: ActorAddress, reason: str) -> list[tuple[Message, int]]:
        """The destination is gone: report what was in flight; return what was still queued
        (never sent), with the message ids it was given."""
        self._ensure_links()
        link = self._links.pop(str(address), None)
        if link is None:
            return []
        lost = [pair for batch in link.inflight.values() for pair in batch]
        if lost:
            self._report_undelivered(link, lost, reason)
        return [(message, parts[1]) for parts, message in link.queue]

    def _report_undelivered(self, link: Link, lost: list[tuple[int, Message]], reason: str) -> None:
        link.undelivered += len(lost)
        for _mid, message in lost:
            self.ledger.count("undelivered", link.label, message.kind)
        log.warning(
            "messages_undelivered",
            actor=self.describe(),
            to=link.label,
            count=len(lost),
            reason=reason,
        )
        self.on_undelivered_ids(link.label, [mid for mid, _ in lost], reason)
        self.on_undelivered(link.label, [message for _, message in lost], reason)

    def reply(
        self,
        to: ActorAddress,
        request: codec.Envelope,
        message: Message,
        *,
        meta: FrameMeta | None = None,
    ) -> None:
        """Send ``message`` to ``to`` as the answer to ``request``."""
        self.send_message(to, message, correlation_id=request.message_id, meta=meta)

    # --- Timers: one pending Thespian wakeup at a time ---------------------------------------
    # Thespian wakeups cannot be cancelled, and simpleSystemBase scans every pending wakeup on
    # every send: thousands of far-off timers made each message cost milliseconds. So timers
    # live in a heap here and only the earliest is armed with Thespian.

    def set_timer(self, seconds: float, payload: Any) -> int:
        """Call ``on_wakeup(payload)`` after ``seconds``; return a token for ``cancel_timer``."""
        if "_timers" not in self.__dict__:
            self._timers, self._armed, self._cancelled = [], [], set()
        token = next(_timer_ids)
        deadline = time.monotonic() + max(seconds, 0.0)
        heapq.heappush(self._timers, (deadline, token, payload))
        self._arm()
        return token

    def cancel_timer(self, token: int) -> None:
        """Forget a timer set with ``set_timer`` (it will not fire)."""
        if "_timers" in self.__dict__:
            self._cancelled.add(token)

    def _arm(self) -> None:
        while self._timers and self._timers[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._timers)[1])
        if not self._timers:
            return
        deadline = self._timers[0][0]
        if any(armed <= deadline for armed in self._armed):
            return
        self._armed.append(deadline)
        self.wakeupAfter(
            timedelta(seconds=max(0.0, deadline - time.monotonic())), payload=_TIMER_WAKEUP
        )

    def _fire_timers(self) -> None:
        if "_timers" not in self.__dict__:
            return
        now = time.monotonic()
        self._armed = [armed for armed in self._armed if armed > now + _TIMER_SLACK]
        while self._timers and self._timers[0][0] <= now + _TIMER_SLACK:
            _deadline, token, payload = heapq.heappop(self._timers)
            if token in self._cancelled:
                self._cancelled.discard(token)
                continue
            self.on_wakeup(payload)
        self._arm()

    # --- Hooks for subclasses -------------------------------------------------------------

    def describe(self) -> str:
        """Return a short name for logs."""
        return type(self).__name__

    def on_message(self, env: codec.Envelope, sender: ActorAddress, meta: FrameMeta) -> None:
        """Handle one decoded message."""
        log.warning("unexpected_message", actor=self.describe(), kind=env.message.kind)

    def accepting(self) -> bool:
        """Return False when data-path messages must be refused (the actor is exiting)."""
        return True

    def on_undelivered(self, to: str, messages: list[Message], reason: str) -> None:
        """Messages sent on the data path to ``to`` were not handled there."""

    def on_undelivered_ids(self, to: str, message_ids: list[int], reason: str) -> None:
        """The ids of the messages ``on_undelivered`` reports (to fail waiting requests)."""

    def on_child_exited(self, address: ActorAddress) -> None:
        """A child actor's process has exited."""

    def on_wakeup(self, payload: Any) -> None:
        """A timer set with ``wakeupAfter`` fired."""

    def on_exit_request(self) -> None:
        """Thespian is about to stop this actor (a kill: no orderly cleanup)."""

    def on_dead_letter(self, to: Address, message: object) -> None:
        """A message to ``to`` could not be delivered (only for actors that handle dead letters)."""
        log.warning("dead_letter", to=str(to))

    def on_internal_error(self, exc: Exception) -> None:
        """An error in Understudy's own code while handling a message."""
        try:
            log.error("internal_error", actor=self.describe(), error=repr(exc), exc_info=exc)
        except Exception:  # noqa: BLE001, S110 - a broken log stream must not kill the actor
            pass
