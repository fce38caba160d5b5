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

import functools
import heapq
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

import structlog
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    ActorSystemConventionUpdate,
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
from actors.core.link import (
    DEFAULT_RESEND_AFTER,
    DEFAULT_RESEND_MAX,
    Delivery,
    OutFrame,
    ReceiveLink,
    SendLink,
)
from actors.core.link_marks import HandledMarks, Marks, SentCounts
from actors.errors import Backpressure
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import ActorRef
from protocols.common import ErrorName, ErrorReply
from protocols.errors import CodecError, MessageTooLarge

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
        from actors.core.workarounds import (  # it imports this module
            detached_signals,
            tune_transport_backoff,
        )

        tune_transport_backoff()
        with detached_signals():
            return ActorSystem(base, capabilities, transientUnique=transient)
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
    """Acknowledged frames of the reverse link, ``[seq, [refused positions]]`` each (``"a"``)."""
    nonce: int = 0
    """The sending incarnation (``"i"``): a random number each actor draws when it starts."""
    low: int = 0
    """The sender's lowest unacknowledged frame on this link (``"lo"``)."""
    first: int = 0
    """The link ordinal of the frame's first message (``"o"``)."""
    sent: int = 0
    """Messages the sender had sent on this link when it built the frame (``"s"``)."""
    admitted: int = 0
    """Messages it had queued for this link by then (``"q"``): what a dead sender owes."""
    bye: bool = False
    """The sender exits in order (``"bye"``): no resend will come."""
    events: tuple[str, int] | None = None
    """A supervisor's (incarnation, events sent) when it answered (``"ev"``)."""
    ask: bool = False
    """An ask from outside the actors: always answered, Ok if the handler returns nothing."""

    def to_wire(self) -> dict[str, Any] | None:
        """Return the msgpack map for this header (None when it carries nothing)."""
        wire: dict[str, Any] = {}
        if self.link is not None:
            wire[_LINK] = self.link
        if self.nonce:
            wire.update({_NONCE: self.nonce, _LOW: self.low, _FIRST: self.first})
            wire.update({_SENT: self.sent, _ADMITTED: self.admitted})
        if self.bye:
            wire[_BYE] = 1
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
        if wire == _ASK_WIRE:  # every ask from outside: skip building a header field by field
            return ASK_META
        events = wire.get(_EVENTS)
        return cls(
            link=wire.get(_LINK),
            acks=wire.get(_ACKS),
            events=(str(events[0]), int(events[1])) if events else None,
            ask=bool(wire.get(_ASK)),
            nonce=int(wire.get(_NONCE, 0)),
            low=int(wire.get(_LOW, 0)),
            first=int(wire.get(_FIRST, 0)),
            sent=int(wire.get(_SENT, 0)),
            admitted=int(wire.get(_ADMITTED, 0)),
            bye=bool(wire.get(_BYE)),
        )


_LINK, _ACKS, _EVENTS, _ASK = "l", "a", "ev", "ask"
_NONCE, _LOW, _FIRST, _SENT, _ADMITTED, _BYE = "i", "lo", "o", "s", "q", "bye"
NO_META = FrameMeta()
ASK_META = FrameMeta(ask=True)
_ASK_WIRE = ASK_META.to_wire()


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
        meta=_ASK_WIRE if ask else None,
        max_size=max_size,
    )


_TIMER_WAKEUP = "understudy.timer"
_TIMER_SLACK = 0.001
_timer_ids = itertools.count(1)

DEFAULT_BATCH_MAX = 512
DEFAULT_WINDOW = 8
DEFAULT_MAX_QUEUE = 100_000


_Item: TypeAlias = tuple[list[Any], Message]
"""One queued message: its envelope parts (id at index 1) and the message itself."""


@dataclass
class Link:
    """The data path to one destination (``actors.core.link.SendLink``) and its counters."""

    address: ActorAddress
    label: str
    send: SendLink[_Item]
    acknowledged: int = 0
    undelivered: int = 0
    announced: int = 0
    """The ``admitted`` count the receiver was last told."""
    receiver_key: str = ""
    slot: int | None = None
    """Its slot in the sender's ``SentCounts``."""

    @property
    def queue(self) -> deque[_Item]:
        """Messages waiting for the window to open."""
        return self.send.queue


@dataclass
class _Inbound:
    """The receiving half of a link from one sender incarnation."""

    address: ActorAddress
    ref: ActorRef | None
    link: ReceiveLink[codec.Envelope | codec.BadEnvelope]
    held: deque[Delivery[codec.Envelope | codec.BadEnvelope]] | None = None
    gone: bool = False
    """The sender's incarnation has ended (a bye frame, or the guardian said so)."""
    grace: float = 0.0
    """Settle once nothing came from it for this long."""
    last_seen: float = 0.0
    """When its last frame was done with (monotonic)."""


_RESEND = "understudy.resend"
_SETTLE = "understudy.settle"
_SETTLED_MEMORY = 4096


def _admin_key(address: ActorAddress) -> str:
    details = address.addressDetails
    if isinstance(details, TCPv4ActorAddress):
        host, port = details.sockname[:2]
        return f"{host}:{port}"
    return str(address)


def _ref_or_none(address: ActorAddress) -> ActorRef | None:
    try:
        return pack_address(address)
    except ValueError:
        return None


def _same(inbound: _Inbound, address: ActorAddress, ref: ActorRef | None) -> bool:
    return inbound.address == address or (ref is not None and inbound.ref == ref)


def _kind_of(env: codec.Envelope | codec.BadEnvelope) -> str:
    return env.message.kind if isinstance(env, codec.Envelope) else str(env.kind)


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
        return _named_ref(details)
    if type(details) is TCPv4ActorAddress:
        host, port = details.sockname[:2]
        return ActorRef(host=host, port=port)
    msg = f"cannot send an address of type {type(details).__name__}: {address}"
    raise ValueError(msg)


@functools.lru_cache(maxsize=4096)
def _named_ref(name: str) -> ActorRef:
    """The (frozen) ActorRef of a named address, built and validated once per name: every
    child start packs its own, its guardian's and its supervisor's address."""
    return ActorRef(name=name)


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
    resend_after: float = DEFAULT_RESEND_AFTER
    resend_max: float = DEFAULT_RESEND_MAX
    counts_handled: bool = False
    """True for actors that count ``handled`` themselves (when the handler really ran); the
    others count a data-path message handled once ``on_message`` has taken it."""
    marks: HandledMarks | None = None
    _mark_due: tuple[int, int, int] | None = None

    def mark_handled_now(self) -> None:
        """Write the handled mark of the data-path message being handled now (the seam writes
        it after the handler anyway; a worker about to die at a crash point writes it first)."""
        if self.marks is not None and self._mark_due is not None:
            self.marks.mark(*self._mark_due)

    """Where this incarnation records how far it handled each sender (see ``link_marks``)."""
    sends: SentCounts | None = None
    """Where it counts what it queued per receiver (see ``link_marks``)."""

    _links: dict[str, Link]
    _acks_due: dict[str, tuple[ActorAddress, list[list[Any]]]]
    _waiting: set[str]
    _inbound: dict[int, _Inbound]
    _settled: dict[int, int]
    _resend_armed: bool
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
            self._inbound = {}
            self._settled = {}  # nonces of gone senders (insertion-ordered, bounded)
            self._resend_armed = False

    @property
    def nonce(self) -> int:
        """This incarnation's random number: receivers tell its frames from a successor's."""
        if "_nonce" not in self.__dict__:
            self._nonce = random.getrandbits(63) or 1
        return self._nonce

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
            elif isinstance(message, ActorSystemConventionUpdate):
                caps = message.remoteCapabilities or {}
                self.on_host_registration(
                    _admin_key(message.remoteAdminAddress), dict(caps), added=message.remoteAdded
                )
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
        if header.acks is not None:
            self._on_acks(sender, header.acks)
        if header.link is not None and header.nonce:
            self._receive_link_frame(header, envelopes, sender)
            return
        if header.bye and header.nonce:
            self._sender_bye(header)
        elif header.nonce:
            self._ensure_links()
            inbound = self._inbound.get(header.nonce)
            if inbound is not None:
                inbound.link.announce(header.sent, header.admitted)
                inbound.last_seen = time.monotonic()
        for env in envelopes:
            if isinstance(env, codec.BadEnvelope):
                self._reject(env, sender)
            else:
                self.on_message(env, sender, header)

    def _reject(self, env: codec.BadEnvelope, sender: ActorAddress) -> None:
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

    # --- The data path, receiving side (``actors.core.link.ReceiveLink``) -------------------

    def _receive_link_frame(
        self,
        header: FrameMeta,
        envelopes: list[codec.Envelope | codec.BadEnvelope],
        sender: ActorAddress,
    ) -> None:
        self._ensure_links()
        nonce, seq = header.nonce, header.link
        assert seq is not None  # noqa: S101 - checked by the caller
        settled = self._settled.get(nonce)
        if settled is not None:
            if seq >= settled:  # counted dead-lettered at the settlement: dropped, logged
                log.warning(
                    "frame_after_sender_gone", actor=self.describe(), sender=str(sender), seq=seq
                )
            return
        inbound = self._inbound.get(nonce)
        if inbound is None:
            inbound = self._inbound[nonce] = _Inbound(sender, _ref_or_none(sender), ReceiveLink())
            self.on_new_sender(sender)
        before = inbound.link.duplicates
        ready, again = inbound.link.accept(
            seq,
            header.low,
            header.first,
            envelopes,
            sent=header.sent,
            admitted=header.admitted,
        )
        if inbound.link.duplicates > before:
            for env in envelopes:
                self.ledger.count("duplicates_dropped", str(sender), _kind_of(env))
        for seq_again, refused in again:
            self._ack(sender, [seq_again, refused])
        if inbound.held is not None:
            inbound.held.extend(ready)
        elif ready and self.hold_sender(sender):
            inbound.held = deque(ready)
        else:
            self._deliver(nonce, inbound, ready, ack=True)
        inbound.last_seen = time.monotonic()
        if inbound.gone:
            self._settle_if_complete(nonce, inbound)

    def _deliver(
        self,
        nonce: int,
        inbound: _Inbound,
        ready: list[Delivery[codec.Envelope | codec.BadEnvelope]],
        *,
        ack: bool,
    ) -> None:
        sender = inbound.address
        key = str(sender)
        marks = self.marks
        for delivery in ready:
            refused: list[int] = []
            meta = FrameMeta(link=delivery.seq)
            for position, env in enumerate(delivery.items):
                if isinstance(env, codec.BadEnvelope):
                    self._reject(env, sender)
                elif not self.accepting():
                    refused.append(position)
                    continue
                else:
                    self.ledger.count("delivered", key, env.message.kind)
                    if marks is not None:
                        self._mark_due = (nonce, delivery.seq, position + 1)
                    self.on_message(env, sender, meta)
                    if not self.counts_handled:
                        self.ledger.count("handled", key, env.message.kind)
                if marks is not None:
                    marks.mark(nonce, delivery.seq, position + 1)
            entry = inbound.link.done(delivery.seq, refused)
            if ack:
                self._ack(sender, [entry[0], entry[1]])

    def _ack(self, sender: ActorAddress, entry: list[Any]) -> None:
        key = str(sender)
        due = self._acks_due.get(key)
        if due is None:
            self._acks_due[key] = (sender, [entry])
        else:
            due[1].append(entry)

    def release_sender(self, sender: ActorAddress) -> None:
        """Hand over the frames ``hold_sender`` held back from ``sender`` (in order)."""
        self._ensure_links()
        ref = _ref_or_none(sender)
        for nonce, inbound in list(self._inbound.items()):
            if inbound.held is not None and _same(inbound, sender, ref):
                held, inbound.held = inbound.held, None
                self._deliver(nonce, inbound, list(held), ack=True)

    def sender_gone(self, sender: ActorAddress, *, killed: bool, owed: int | None = None) -> None:
        """The actor at ``sender`` has exited: settle what it sent
        (``actors.core.link.ReceiveLink.settle``).

        Its sent counts survive it (``owed``: the messages this actor must account for; what
        it sent, plus what it had queued if it was ``killed``: an orderly exit dead-letters
        its queue itself). Once that many have arrived it is settled at once; else what
        arrives until its frames stop coming for a grace period (``2 * resend_after`` for a
        killed one, ``resend_max`` for one that exits in order and may still be sending) is
        handled, and the rest dead-lettered; a frame of it arriving later is dropped (it was
        counted) and logged. Its bye (``_sender_bye``), which may come before or after this
        notice or be lost with its process, gives the same count."""
        self._ensure_links()
        ref = _ref_or_none(sender)
        for nonce, inbound in list(self._inbound.items()):
            if _same(inbound, sender, ref):
                inbound.link.gone(owed, orderly=not killed)
                if not inbound.gone:
                    self._mark_gone(
                        nonce, inbound, 2 * self.resend_after if killed else self.resend_max
                    )
                self._settle_if_complete(nonce, inbound)

    def _sender_bye(self, header: FrameMeta) -> None:
        """The sender exits in order and says how many messages it sent on this link."""
        self._ensure_links()
        inbound = self._inbound.get(header.nonce)
        if inbound is not None:
            inbound.link.bye(header.sent)
            if not inbound.gone:
                self._mark_gone(header.nonce, inbound, self.resend_max)
            self._settle_if_complete(header.nonce, inbound)

    def _mark_gone(self, nonce: int, inbound: _Inbound, grace: float) -> None:
        inbound.gone, inbound.grace = True, grace
        inbound.last_seen = time.monotonic()
        self.set_timer(grace, (_SETTLE, nonce))

    def _settle_when_quiet(self, nonce: int) -> None:
        """Settle once the gone sender's frames stopped coming for its grace period: its
        last frames may still sit in this process's socket, read one message at a time."""
        inbound = self._inbound.get(nonce)
        if inbound is None:
            return
        quiet = time.monotonic() - inbound.last_seen
        if quiet < inbound.grace:
            self.set_timer(inbound.grace - quiet, (_SETTLE, nonce))
        else:
            self._settle(nonce)

    def _settle_if_complete(self, nonce: int, inbound: _Inbound) -> None:
        """Settle a gone sender once every message it owed has arrived."""
        if inbound.link.complete:
            self._settle(nonce)

    def _settle(self, nonce: int) -> None:
        inbound = self._inbound.pop(nonce, None)
        if inbound is None:
            return
        self._settled[nonce] = inbound.link.expected or 0
        while len(self._settled) > _SETTLED_MEMORY:
            del self._settled[next(iter(self._settled))]
        settlement = inbound.link.settle()
        log.info(
            "sender_settled",
            actor=self.describe(),
            sender=str(inbound.address),
            handled_late=sum(len(d.items) for d in settlement.deliveries),
            received=inbound.link.received,
            announced=inbound.link.announced_sent,
        )
        held = list(inbound.held or ())
        self._deliver(nonce, inbound, held + settlement.deliveries, ack=False)
        lost = settlement.lost_in_flight + settlement.lost_queued
        if lost:
            reason = "the sender's incarnation ended before they arrived"
            self.ledger.count("dead_lettered", str(inbound.address), "?", lost)
            log.warning(
                "messages_dead_lettered",
                actor=self.describe(),
                sender=str(inbound.address),
                lost_in_flight=settlement.lost_in_flight,
                lost_queued=settlement.lost_queued,
                reason=reason,
            )
            self.on_lost(inbound.address, lost, reason)

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

    def spawn_by_name(self, class_path: str) -> Address:
        """Create a child actor of the class named ``module.Class`` (a layer above the core)."""
        address: Address = self.createActor(class_path)
        return address

    def spawn_on(self, actor_class: type[SeamActor] | str, requirements: dict[str, str]) -> Address:
        """Create an actor on a host of the convention whose capabilities meet
        ``requirements`` (checked by the class's ``actorSystemCapabilityCheck``)."""
        address: Address = self.createActor(actor_class, targetActorRequirements=requirements)
        return address

    def watch_hosts(self) -> None:
        """Receive ``on_host_registration`` for every host that joins or leaves the convention."""
        self.notifyOnSystemRegistrationChanges(True)

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

    def send_messages(self, to: ActorAddress, messages: list[Message]) -> list[int]:
        """Send ``messages`` to ``to`` in order, in one frame (handled one by one there), or
        one frame each if together they exceed ``max_message_size``; return their ids."""
        ids = [codec.new_message_id() for _ in messages]
        parts = [codec.envelope_parts(m, mid) for m, mid in zip(messages, ids, strict=True)]
        try:
            data = codec.encode_frame(parts, max_size=self.max_message_size)
        except MessageTooLarge:
            return [self.send_message(to, message) for message in messages]
        self.send(to, data)
        return ids

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
            link = self._links[key] = Link(
                to,
                label or key,
                SendLink(
                    window=self.window,
                    batch_max=self.batch_max,
                    resend_after=self.resend_after,
                    resend_max=self.resend_max,
                ),
            )
        if message_id is None and len(link.queue) >= self.max_queue:
            msg = (
                f"{len(link.queue)} messages already wait for {link.label} "
                f"(max_queue={self.max_queue}); it is slower than its senders"
            )
            raise Backpressure(msg)
        if message_id is None:
            self.ledger.count("sent", link.label, message.kind)
        mid = codec.new_message_id() if message_id is None else message_id
        link.send.admit((codec.envelope_parts(message, mid, correlation_id), message))
        sends = self.sends
        if sends is not None:
            if not link.receiver_key:
                ref = _ref_or_none(to)
                link.receiver_key = ref.key() if ref is not None else "?"
                link.slot = sends.slot(link.receiver_key)
            sends.count(link.receiver_key, link.slot, link.send.admitted)
        self._waiting.add(key)
        if len(link.queue) >= self.batch_max:
            self._flush_link(key, link)
        return mid

    def unacknowledged(self, to: ActorAddress) -> int:
        """Messages queued on the data path to ``to`` that it has not acknowledged yet."""
        link = self.__dict__.get("_links", {}).get(str(to))
        return 0 if link is None else link.send.unacknowledged

    def flush_links(self) -> None:
        """Send what the links can send now, and the acknowledgements due."""
        if "_links" not in self.__dict__:
            return
        for key in list(self._waiting):
            link = self._links.get(key)
            if link is not None and link.queue:
                self._flush_link(key, link)
                if link.queue and link.send.admitted > link.announced:
                    self._announce(link)
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
        frames = link.send.next_frames(time.monotonic())
        for frame in frames:
            meta = FrameMeta(
                link=frame.seq,
                nonce=self.nonce,
                low=link.send.lowest,
                first=frame.first,
                sent=link.send.sent,
                admitted=link.send.admitted,
            ).to_wire()
            assert meta is not None  # noqa: S101 - a data frame always has a header
            due = self._acks_due.pop(key, None)
            if due is not None:
                meta[_ACKS] = due[1]
            data = codec.encode_frame(
                [parts for parts, _ in frame.items], meta=meta, max_size=self.max_message_size
            )
            frame.payload = data
            link.announced = link.send.admitted
            self.send(link.address, data)
        if frames and not self._resend_armed:
            self._resend_armed = True
            self.set_timer(self.resend_after, _RESEND)

    def _announce(self, link: Link) -> None:
        """Tell the receiver how many messages wait here for its window to open (should this
        incarnation be killed, the receiver counts them lost)."""
        meta = FrameMeta(nonce=self.nonce, sent=link.send.sent, admitted=link.send.admitted)
        link.announced = link.send.admitted
        data = codec.encode_frame([], meta=meta.to_wire(), max_size=self.max_message_size)
        self.send(link.address, data)

    def _resend(self) -> None:
        """Send again the frames whose acknowledgement is overdue; re-arm for the next one."""
        self._resend_armed = False
        if "_links" not in self.__dict__:
            return
        now = time.monotonic()
        next_due: float | None = None
        for link in self._links.values():
            frames: list[OutFrame[_Item]] = link.send.due_frames(now)
            for frame in frames:
                for _parts, message in frame.items:
                    self.ledger.count("resent", link.label, message.kind)
                assert isinstance(frame.payload, bytes)  # noqa: S101 - set when first sent
                self.send(link.address, frame.payload)
            if frames:
                log.info(
                    "frames_resent",
                    actor=self.describe(),
                    to=link.label,
                    frames=len(frames),
                    attempts=max(frame.attempts for frame in frames),
                )
            due = link.send.next_due()
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        if next_due is not None:
            self._resend_armed = True
            self.set_timer(max(0.0, next_due - now), _RESEND)

    def _on_acks(self, sender: ActorAddress, acks: list[list[Any]]) -> None:
        self._ensure_links()
        link = self._links.get(str(sender))
        if link is None:
            return
        now = time.monotonic()
        for seq, refused in acks:
            result = link.send.acknowledge(int(seq), [int(p) for p in refused], now)
            if result is None:
                continue
            handled, lost = result
            link.acknowledged += len(handled)
            if lost:
                self._report_undelivered(
                    link, [(parts[1], m) for parts, m in lost], "the receiver was exiting"
                )

    def queued_ids(self, address: ActorAddress) -> set[int]:
        """The ids of the messages queued (not yet sent) for ``address``."""
        self._ensure_links()
        link = self._links.get(str(address))
        return {parts[1] for parts, _ in link.queue} if link is not None else set()

    def take_unsent(self) -> list[tuple[str, Message]]:
        """Remove and return every message still queued (never sent) on the data path, with
        its link's label (the actor is going away: they will not be sent). Each receiver is
        told that no resend will come (it settles what is on its way), and the sent counts
        (``link_marks.SentCounts``) keep, per receiver, only what was sent: the receiver learns
        it through the guardian should the bye be lost."""
        if "_links" not in self.__dict__:
            return []
        unsent = []
        sends = self.sends
        for link in self._links.values():
            unsent += [(link.label, message) for _, message in link.send.take_queue()]
            if sends is not None and link.receiver_key:
                # The caller dead-letters the queue: the receiver is owed only what was sent,
                # even if this process ends before the bye (or the frames) leave it.
                sends.count(link.receiver_key, link.slot, link.send.sent)
            if link.send.inflight:
                bye = FrameMeta(nonce=self.nonce, sent=link.send.sent, bye=True).to_wire()
                self.send(
                    link.address, codec.encode_frame([], meta=bye, max_size=self.max_message_size)
                )
        self._waiting.clear()
        return unsent

    def fail_link(
        self, address: ActorAddress, reason: str, *, marks: Marks | None = None
    ) -> list[tuple[Message, int]]:
        """The destination is gone: report what it did not handle; return what was still
        queued (never sent), with the message ids it was given.

        ``marks`` are the receiver's handled marks (``link_marks``): with them exactly the
        messages it did not handle are reported undelivered; without, every one in flight is.
        """
        self._ensure_links()
        link = self._links.pop(str(address), None)
        if link is None:
            return []
        mark = None if marks is None else marks.get(self.nonce, (0, 0))
        gone = link.send.receiver_gone(mark)
        link.acknowledged += len(gone.handled)
        if gone.undelivered:
            lost = [(parts[1], message) for parts, message in gone.undelivered]
            self._report_undelivered(link, lost, reason)
        return [(message, parts[1]) for parts, message in gone.queued]

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
            if payload == _RESEND:
                self._resend()
            elif isinstance(payload, tuple) and payload and payload[0] == _SETTLE:
                self._settle_when_quiet(payload[1])
            else:
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

    def hold_sender(self, sender: ActorAddress) -> bool:
        """Return True to hold ``sender``'s data-path frames until ``release_sender(sender)``
        (unacknowledged, in order), e.g. while asking who it is."""
        return False

    def on_host_registration(
        self, admin: str, capabilities: dict[str, Any], *, added: bool
    ) -> None:
        """A host joined (``added``) or left the convention; ``admin`` is its admin address."""

    def on_lost(self, sender: ActorAddress, count: int, reason: str) -> None:
        """A sender that exited had announced ``count`` messages that never arrived."""

    def on_new_sender(self, sender: ActorAddress) -> None:
        """The first data-path frame of a new sender incarnation arrived (watch it to learn
        when it is gone: then call ``sender_gone``)."""

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
