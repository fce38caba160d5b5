"""The message seam: THE one adapter between Thespian and Understudy.

Every message an Understudy actor sends or receives passes through :class:`SeamActor`:

* ``receiveMessage`` (Thespian's camelCase stops here) decodes a frame of msgpack envelopes
  and hands each message to ``on_message`` in order; Thespian's own system messages become
  ``on_child_exited`` / ``on_wakeup`` / ``on_exit_request`` calls;
* bad bytes, unknown kinds, invalid fields and oversized frames get a typed ``ErrorReply`` to
  the sender and a ``message_rejected`` log event; they never crash the receiver;
* no exception ever reaches Thespian (which would retry the message and keep the actor alive,
  see ``actors._workarounds``): an error in Understudy's own code goes to ``on_internal_error``;
* ``send_message`` is the only way out: encode, then ``self.send``.
"""

from __future__ import annotations

import pickle
from typing import Any

import structlog
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    DeadEnvelope,
    PoisonMessage,
    WakeupMessage,
)

from protocols import codec
from protocols._base import Message
from protocols.common import ErrorReply
from protocols.errors import CodecError

log = structlog.get_logger("understudy.seam")

ASK_META: dict[str, Any] = {"ask": 1}


def pack_address(address: ActorAddress) -> bytes:
    """Return a Thespian address as bytes for an ``AddressBlob`` field."""
    return pickle.dumps(address, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_address(blob: bytes) -> ActorAddress:
    """Return the Thespian address packed by :func:`pack_address`."""
    address: ActorAddress = pickle.loads(blob)  # noqa: S301 - blobs come from our own actors
    return address


class SeamActor(Actor):  # type: ignore[misc] - thespian is untyped
    """Base of every Understudy actor: decode in, encode out, never raise into Thespian."""

    max_message_size: int = codec.DEFAULT_MAX_SIZE

    # --- Thespian entry point -------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802, ANN401
        """Dispatch one Thespian message; see the module doc."""
        try:
            if isinstance(message, bytes):
                self._receive_frame(message, sender)
            elif isinstance(message, ChildActorExited):
                self.on_child_exited(message.childAddress)
            elif isinstance(message, WakeupMessage):
                self.on_wakeup(message.payload)
            elif isinstance(message, ActorExitRequest):
                self.on_exit_request()
            elif isinstance(message, PoisonMessage):
                log.warning("message_poisoned", actor=self.describe(), details=str(message.details))
            elif isinstance(message, DeadEnvelope):
                self.on_dead_letter(message)
            elif type(message).__module__.startswith("thespian."):
                log.debug("thespian_message_ignored", type=type(message).__name__)
            else:
                log.warning(
                    "unexpected_message", actor=self.describe(), type=type(message).__name__
                )
                self.send_message(
                    sender,
                    ErrorReply(
                        error="DecodeError",
                        message=f"expected an Understudy frame (bytes), got {type(message).__name__}",
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - nothing may reach Thespian's retry
            self.on_internal_error(exc)

    def _receive_frame(self, data: bytes, sender: ActorAddress) -> None:
        try:
            meta, envelopes = codec.decode_frame(data, max_size=self.max_message_size)
        except CodecError as exc:
            log.warning("message_rejected", actor=self.describe(), error=type(exc).__name__,
                        detail=str(exc))
            self.send_message(sender, ErrorReply(error=type(exc).__name__, message=str(exc)))
            return
        for env in envelopes:
            if isinstance(env, codec.BadEnvelope):
                log.warning("message_rejected", actor=self.describe(),
                            error=type(env.error).__name__, kind=env.kind, detail=str(env.error))
                if isinstance(env.error, CodecError):
                    text = env.error.kind if hasattr(env.error, "kind") else str(env.error)
                else:
                    text = str(env.error)
                self.send_message(
                    sender,
                    ErrorReply(error=type(env.error).__name__, message=str(text)),
                    correlation_id=env.message_id,
                )
                continue
            self.on_message(env, sender, meta)

    # --- Sending ------------------------------------------------------------------------

    def send_message(
        self,
        to: ActorAddress,
        message: Message,
        *,
        correlation_id: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Encode ``message`` and send it to ``to``; return its message id."""
        mid = codec.new_message_id()
        data = codec.encode_frame(
            [codec.envelope_parts(message, mid, correlation_id)],
            meta=meta,
            max_size=self.max_message_size,
        )
        self.send(to, data)
        return mid

    def reply(
        self,
        to: ActorAddress,
        request: codec.Envelope,
        message: Message,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Send ``message`` to ``to`` as the answer to ``request``."""
        self.send_message(to, message, correlation_id=request.message_id, meta=meta)

    # --- Hooks for subclasses -------------------------------------------------------------

    def describe(self) -> str:
        """Return a short name for logs."""
        return type(self).__name__

    def on_message(
        self, env: codec.Envelope, sender: ActorAddress, meta: dict[str, Any] | None
    ) -> None:
        """Handle one decoded message."""
        log.warning("unexpected_message", actor=self.describe(), kind=env.message.kind)

    def on_child_exited(self, address: ActorAddress) -> None:
        """A child actor's process has exited."""

    def on_wakeup(self, payload: Any) -> None:  # noqa: ANN401 - whatever was scheduled
        """A timer set with ``wakeupAfter`` fired."""

    def on_exit_request(self) -> None:
        """Thespian is about to stop this actor (a kill: no orderly cleanup)."""

    def on_dead_letter(self, envelope: DeadEnvelope) -> None:
        """A message could not be delivered (only for actors that handle dead letters)."""
        log.warning("dead_letter", to=str(envelope.deadAddress))

    def on_internal_error(self, exc: Exception) -> None:
        """An error in Understudy's own code while handling a message."""
        log.error("internal_error", actor=self.describe(), error=repr(exc), exc_info=exc)
