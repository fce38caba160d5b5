"""Message <-> bytes: the msgpack wire format of the seam.

A Thespian message sent by Understudy is the bytes of one *frame*::

    frame    = [FORMAT_VERSION, meta, [envelope, ...]]
    envelope = [kind, message_id, correlation_id, body]

``meta`` is a map for link-level data (None when unused); ``body`` is the model's JSON-mode dump
without its ``kind``. A frame usually carries one envelope; batching puts several in one frame
and the receiver handles them in order. ``correlation_id`` is the id of the request a reply
answers (None for a request or a one-way message).

``encode``/``decode`` handle a single message; ``encode_frame``/``decode_frame`` handle frames.
``decode`` raises only :class:`~protocols.errors.CodecError` subclasses, each ``from`` the
original exception.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import ValidationError

from protocols._base import Message, message_class
from protocols.errors import DecodeError, MessageInvalid, MessageTooLarge, UnknownMessageKind

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "BadEnvelope",
    "Envelope",
    "decode",
    "decode_envelope",
    "decode_frame",
    "encode",
    "encode_frame",
    "envelope_parts",
    "new_message_id",
]

FORMAT_VERSION = 1
DEFAULT_MAX_SIZE = 8 * 1024 * 1024

_ids = itertools.count(int.from_bytes(os.urandom(6), "big") << 12)


def new_message_id() -> int:
    """Return a message id unique within this process (and, with high probability, globally)."""
    return next(_ids)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded message with its ids."""

    message: Message
    message_id: int
    correlation_id: int | None = None


@dataclass(frozen=True, slots=True)
class BadEnvelope:
    """An envelope of a frame that could not be decoded; ids are kept when they were readable."""

    error: Exception
    kind: str | None
    message_id: int | None
    correlation_id: int | None


def _body(message: Message) -> dict[str, Any]:
    # ``model_dump(mode="json")`` without its keyword plumbing (a third of its time on a small
    # message); the same serializer, the same output.
    body: dict[str, Any] = message.__pydantic_serializer__.to_python(message, mode="json")
    body.pop("kind", None)
    return body


def envelope_parts(
    message: Message, message_id: int, correlation_id: int | None = None
) -> list[Any]:
    """Return the msgpack-ready list for one envelope."""
    return [message.kind, message_id, correlation_id, _body(message)]


def encode_frame(
    envelopes: list[list[Any]],
    *,
    meta: dict[str, Any] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Pack envelopes (from :func:`envelope_parts`) into one frame.

    Raises:
        MessageTooLarge: the frame is larger than ``max_size`` bytes.
        MessageInvalid: a value cannot be represented in msgpack (e.g. an int beyond 64 bits).
    """
    try:
        data: bytes = _packer().pack([FORMAT_VERSION, meta, envelopes])
    except (OverflowError, TypeError, ValueError) as exc:
        msg = f"cannot encode frame: {exc}"
        raise MessageInvalid(msg) from exc
    if len(data) > max_size:
        raise MessageTooLarge(len(data), max_size)
    return data


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack Packer (``packb`` builds a new one per call: a quarter of the
    time to pack a small frame). A Packer is not thread-safe, so each thread has its own; it
    resets itself after every ``pack``, also one that raised."""
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode(
    message: Message,
    *,
    message_id: int | None = None,
    correlation_id: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Encode one message as a one-envelope frame.

    Raises:
        MessageTooLarge: the encoded message is larger than ``max_size`` bytes.
    """
    mid = new_message_id() if message_id is None else message_id
    return encode_frame([envelope_parts(message, mid, correlation_id)], max_size=max_size)


def _unpack(data: bytes, max_size: int) -> tuple[dict[str, Any] | None, list[Any]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        msg = f"expected bytes, got {type(data).__name__}"
        raise DecodeError(msg)
    if len(data) > max_size:
        raise MessageTooLarge(len(data), max_size)
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        msg = f"not a msgpack frame: {exc}"
        raise DecodeError(msg) from exc
    if not isinstance(frame, list) or len(frame) != 3:
        msg = "frame must be a 3-element array [version, meta, envelopes]"
        raise DecodeError(msg)
    version, meta, envelopes = frame
    if type(version) is not int or version != FORMAT_VERSION:
        msg = f"unsupported frame format version {version!r}, expected {FORMAT_VERSION}"
        raise DecodeError(msg)
    if meta is not None and not isinstance(meta, dict):
        msg = "frame meta must be a map or nil"
        raise DecodeError(msg)
    if not isinstance(envelopes, list):
        msg = "frame envelopes must be an array"
        raise DecodeError(msg)
    return meta, envelopes


def _decode_envelope(raw: Any) -> Envelope:
    if not isinstance(raw, list) or len(raw) != 4:
        msg = "envelope must be a 4-element array [kind, id, correlation_id, body]"
        raise DecodeError(msg)
    kind, message_id, correlation_id, body = raw
    if not isinstance(kind, str):
        msg = f"envelope kind must be a string, got {type(kind).__name__}"
        raise DecodeError(msg)
    if type(message_id) is not int or not (correlation_id is None or type(correlation_id) is int):
        msg = "envelope ids must be integers"
        raise DecodeError(msg)
    if not isinstance(body, dict):
        msg = f"envelope body of {kind!r} must be a map"
        raise DecodeError(msg)
    cls = message_class(kind)
    if cls is None:
        raise UnknownMessageKind(kind)
    try:
        # ``model_validate`` without its keyword plumbing: the same validator, the same checks.
        message = cls.__pydantic_validator__.validate_python(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
            for err in exc.errors()
        )
        msg = f"invalid {kind!r} message: {problems}"
        raise MessageInvalid(msg) from exc
    return Envelope(message, message_id, correlation_id)


def decode_frame(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[dict[str, Any] | None, list[Envelope | BadEnvelope]]:
    """Decode a frame into its meta and its envelopes, in order.

    An envelope that cannot be decoded becomes a :class:`BadEnvelope` in its place, so one bad
    message never hides the others.

    Raises:
        DecodeError: the frame itself is unreadable.
        MessageTooLarge: the frame is larger than ``max_size`` bytes.
    """
    meta, envelopes = _unpack(data, max_size)
    out: list[Envelope | BadEnvelope] = []
    for raw in envelopes:
        try:
            out.append(_decode_envelope(raw))
        except (DecodeError, UnknownMessageKind, MessageInvalid) as exc:
            ids = raw if isinstance(raw, list) and len(raw) == 4 else [None] * 4
            kind = ids[0] if isinstance(ids[0], str) else None
            mid = ids[1] if isinstance(ids[1], int) else None
            corr = ids[2] if isinstance(ids[2], int) else None
            out.append(BadEnvelope(exc, kind, mid, corr))
    return meta, out


def decode_envelope(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """Decode a one-envelope frame into its Envelope.

    Raises:
        DecodeError, UnknownMessageKind, MessageInvalid, MessageTooLarge: see the module doc.
    """
    _meta, envelopes = _unpack(data, max_size)
    if len(envelopes) != 1:
        msg = f"expected a frame with one envelope, got {len(envelopes)}"
        raise DecodeError(msg)
    return _decode_envelope(envelopes[0])


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Message:
    """Decode a one-envelope frame into its Message.

    Raises:
        DecodeError, UnknownMessageKind, MessageInvalid, MessageTooLarge: see the module doc.
    """
    return decode_envelope(data, max_size=max_size).message
