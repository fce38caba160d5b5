"""The Thespian TCP transport made safe to expose: one named workaround for three defects.

Measured with thespian 4.0.1 (tests/integration/test_transport_guard.py shows each defect on
raw Thespian, then the fix):

1. **It binds every interface.** An address that is "external" binds ``('', port)``
   (``IPActorAddress.bindname``), so 20 of the 21 sockets of ``understudy up`` listened on
   0.0.0.0. :func:`install` makes every socket of the process (the admin, every actor, the
   external client of the Runtime) bind ``listen`` (``system.listen``, loopback by default)
   and advertise it (``THESPIAN_BASE_IPADDR``).
2. **It unpickles whatever arrives.** The transport deserialises every frame with
   ``pickle.loads`` (its module-level ``serializer``): a pickle whose ``__reduce__`` runs a
   shell command executes in the receiver. After :func:`install` every frame carries an
   HMAC-SHA256 tag of its bytes under the deployment secret (:mod:`actors.core.keyring`),
   checked before anything is deserialised; a frame that passes is then loaded by a
   restricted unpickler that admits only the classes the transport itself sends (Thespian's
   system messages and addresses: :data:`ALLOWED_CLASSES`).
3. **One malformed frame kills the receiver.** A pickled 2-tuple of the wrong types passes
   deserialisation and crashes the transport later (``AttributeError`` in ``opsKey``); a
   length prefix of a gigabyte makes it buffer that much. After :func:`install` a frame is
   checked for its shape (``(ActorAddress, message)`` or an acknowledgement) and its length
   (at most ``max_frame`` bytes) too.

A rejected frame is dropped, counted (:func:`rejected_frames`) and logged as
``frame_rejected`` with the peer's address and the reason; Thespian then answers the peer with
its data-error acknowledgement and closes that connection. The receiver keeps running.

The guard is process-wide (the transport is module state) and is inherited by every actor
process Thespian forks, so :func:`install` runs once, in the process that starts or joins the
ActorSystem, before the system is opened (``actors.core.seam.open_system`` calls it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import structlog
from thespian.actors import ActorAddress
from thespian.system.transport import TCPTransport as _tcp  # noqa: N813 - Thespian's module names
from thespian.system.transport import streamBuffer as _stream  # noqa: N813
from thespian.system.transport.IPBase import IPActorAddress

from actors.core.keyring import TAG_BYTES, Keyring, SecretError

__all__ = [
    "ALLOWED_CLASSES",
    "BASE_ADDRESS_ENV",
    "FrameRejected",
    "guard_installed",
    "install",
    "rejected_frames",
    "restricted_loads",
    "uninstalled",
]

log = structlog.get_logger("understudy.transport_guard")

BASE_ADDRESS_ENV: Final = "THESPIAN_BASE_IPADDR"

_MESSAGE_MODULES: Final = {
    "thespian.actors": (
        "ActorAddress",
        "ActorSystemMessage",
        "ActorSystemConventionUpdate",
        "ActorExitRequest",
        "ChildActorExited",
        "PoisonMessage",
        "WakeupMessage",
        "DeadEnvelope",
    ),
    "thespian.system.messages.admin": (
        "QueryExists",
        "QueryAck",
        "SystemShutdown",
        "SystemShutdownCompleted",
        "PendingActor",
        "PendingActorResponse",
        "HandleDeadLetters",
        "CapabilityUpdate",
        "NewCapabilities",
        "NotifyOnSourceAvailability",
    ),
    "thespian.system.messages.convention": (
        "ConventionRegister",
        "ConventionDeRegister",
        "ConventionInvite",
        "NotifyOnSystemRegistration",
    ),
    "thespian.system.messages.logcontrol": ("SetLogging",),
    "thespian.system.messages.multiproc": (
        "EndpointConnected",
        "LoggerConnected",
        "ChildMayHaveDied",
    ),
    "thespian.system.messages.status": (
        "Thespian_StatusReq",
        "Thespian_SystemStatus",
        "Thespian_ActorStatus",
    ),
    "thespian.system.logdirector": ("LoggerExitRequest", "LoggerFileDup", "LogAggregator"),
    "thespian.system.transport": ("ForwardMessage",),
    "thespian.system.addressManager": ("ActorLocalAddress",),
    "thespian.system.transport.IPBase": (
        "TCPv4ActorAddress",
        "RoutedTCPv4ActorAddress",
        "TXOnlyAdminTCPv4ActorAddress",
    ),
    "thespian.system.transport.TCPTransport": (
        "RoutedTCPv4ActorAddress",
        "TXOnlyAdminTCPv4ActorAddress",
    ),
    "socket": ("AddressFamily", "SocketKind"),
    "logging": ("LogRecord",),
    "datetime": ("timedelta", "datetime"),
}

#: The (module, name) pairs the restricted unpickler resolves; anything else is refused.
#: Thespian's source-loading messages (ValidateSource, SourceHashTransfer*, ...) are left out
#: on purpose: Understudy never loads actor source over the wire.
ALLOWED_CLASSES: Final[frozenset[tuple[str, str]]] = frozenset(
    (module, name) for module, names in _MESSAGE_MODULES.items() for name in names
)


class FrameRejected(Exception):
    """A frame failed the tag, length or shape check, or named a class not allowed."""


def _resolve_allowed() -> dict[tuple[str, str], Any]:
    """The allowed classes, imported once (a frame then costs a dict lookup per class)."""
    resolved: dict[tuple[str, str], Any] = {}
    for module, name in ALLOWED_CLASSES:
        with contextlib.suppress(ImportError, AttributeError):
            resolved[module, name] = getattr(importlib.import_module(module), name)
    return resolved


_ALLOWED: Final = _resolve_allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            msg = f"class {module}.{name} is not allowed in a frame"
            raise FrameRejected(msg)
        return found


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` admitting only :data:`ALLOWED_CLASSES`.

    Raises:
        FrameRejected: the pickle names another class, or is not a valid pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except FrameRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a bad frame
        msg = f"not a valid frame body: {type(exc).__name__}: {exc}"
        raise FrameRejected(msg) from None


def _check_shape(value: Any) -> Any:
    if isinstance(value, str):
        if value in (_stream.ackPacket, _stream.ackDataErrPacket):
            return value
        msg = "a text frame that is not an acknowledgement"
        raise FrameRejected(msg)
    if (
        isinstance(value, tuple)
        and len(value) == 2  # Thespian's (sender, message)
        and isinstance(value[0], ActorAddress)
    ):
        details = value[0].addressDetails
        if details is None or isinstance(details, IPActorAddress):
            return value
        msg = f"a sender address of type {type(details).__name__}"
        raise FrameRejected(msg)
    msg = f"a frame of type {type(value).__name__}, not (sender address, message)"
    raise FrameRejected(msg)


@dataclass
class _Guard:
    keyring: Keyring
    listen: str
    max_frame: int
    rejected: int = 0


_guard: _Guard | None = None
_lock = threading.Lock()
# The socket whose bytes are being deserialised (the transport runs one thread per process).
_current_socket: Any = None


def _peer() -> str:
    sock = getattr(_current_socket, "socket", _current_socket)
    try:
        host, port = sock.getpeername()[:2]
    except (AttributeError, OSError, TypeError, ValueError):
        return "unknown"
    return f"{host}:{port}"


def _reject(reason: str, size: int) -> None:
    guard = _guard
    if guard is not None:
        guard.rejected += 1
        count = guard.rejected
    else:
        count = 0
    log.warning("frame_rejected", peer=_peer(), reason=reason, size=size, rejected=count)


def _refresh(guard: _Guard, *, force: bool = True) -> bool:
    """Pick up a changed secret file (one ``stat`` per frame, so a process never sends under a
    key already retired, nor refuses one just rotated in); acknowledgements are tagged again
    with the new key. Return True if the keys changed."""
    try:
        changed = guard.keyring.refresh(force=force)
    except SecretError as exc:
        log.error("secret_unreadable", error=str(exc))
        return False
    if changed:
        _tcp.ackMsg = _tagged_ack(_stream.ackPacket)
        _tcp.ackDataErrMsg = _tagged_ack(_stream.ackDataErrPacket)
        log.info("secret_reloaded", secret=str(guard.keyring.path), keys=len(guard.keyring.keys))
    return changed


def _dumps(value: Any) -> bytes:
    guard = _guard
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if guard is None:
        return body
    _refresh(guard)
    return guard.keyring.tag(body) + body


def _loads(data: bytes) -> Any:
    """Check a frame and return its contents; None (which Thespian drops) when it is refused."""
    guard = _guard
    if guard is None:
        return pickle.loads(data)  # noqa: S301 - the guard was removed (tests of raw Thespian)
    _refresh(guard)
    try:
        if len(data) <= TAG_BYTES:
            msg = "a frame too short to carry a tag"
            raise FrameRejected(msg)
        given, body = data[:TAG_BYTES], data[TAG_BYTES:]
        if not guard.keyring.matches(body, given):
            msg = "the frame's tag does not match any key of the deployment secret"
            raise FrameRejected(msg)
        return _check_shape(restricted_loads(body))
    except FrameRejected as exc:
        _reject(str(exc), len(data))
        return None


class _Serializer:
    """Stands in for the ``pickle`` module the TCP transport calls ``serializer``."""

    dumps = staticmethod(_dumps)
    loads = staticmethod(_loads)


class _GuardedReceiveBuffer(_stream.ReceiveBuffer):  # type: ignore[misc]
    """Thespian's receive buffer, refusing a bad or oversized length prefix before buffering."""

    def addMore(self, buf: bytes) -> None:  # noqa: N802 - Thespian's name
        if getattr(self, "_refused", False):
            return
        try:
            super().addMore(buf)
        except ValueError:
            self._refuse("a length prefix that is not a number", len(buf))
            return
        size = self._size
        guard = _guard
        if size is not None and (size < 0 or (guard is not None and size > guard.max_frame)):
            limit = guard.max_frame if guard is not None else 0
            self._refuse(f"a frame of {size} bytes (at most {limit})", size)

    def _refuse(self, reason: str, size: int) -> None:
        _reject(reason, size)
        self._refused = True
        self._size = None
        self._buf = b""
        self._blen = 41  # isDone() is True, completed() is None: Thespian drops the connection
        self._extra = b""

    def completed(self) -> Any:
        if getattr(self, "_refused", False):
            return None
        return super().completed()


_originals: dict[str, Any] = {
    "serializer": _tcp.serializer,
    "ReceiveBuffer": _tcp.ReceiveBuffer,
    "ackMsg": _tcp.ackMsg,
    "ackDataErrMsg": _tcp.ackDataErrMsg,
    "bindArgs": IPActorAddress.bindArgs,
    "_addedDataToIncoming": _tcp.TCPTransport._addedDataToIncoming,
    "_check_XMIT_4_done": _tcp.TCPTransport._check_XMIT_4_done,
}


def _bind_args(self: Any) -> tuple[tuple[str, int], ...]:
    guard = _guard
    name = self.bindname
    if guard is not None and name[0] == "":
        return ((guard.listen, name[1]),)
    return (name,)


def _added_data(self: Any, inc: Any, *args: Any, **kwargs: Any) -> Any:
    global _current_socket  # noqa: PLW0603 - the transport's one thread
    _current_socket = inc
    return _originals["_addedDataToIncoming"](self, inc, *args, **kwargs)


def _check_xmit(self: Any, intent: Any, rcv: Any) -> Any:
    global _current_socket  # noqa: PLW0603 - the transport's one thread
    _current_socket = intent.socket
    return _originals["_check_XMIT_4_done"](self, intent, rcv)


def _tagged_ack(packet: str) -> bytes:
    guard = _guard
    body = pickle.dumps(packet, protocol=pickle.HIGHEST_PROTOCOL)
    framed = guard.keyring.tag(body) + body if guard is not None else body
    return f"{len(framed)}>".encode() + framed


def install(*, listen: str, keyring: Keyring, max_frame: int) -> None:
    """Guard this process's TCP transport (and the actor processes it forks from now on).

    Args:
        listen: the one IPv4 address every socket binds and advertises.
        keyring: the deployment secret; frames are tagged with its current key and accepted
            under any of its keys.
        max_frame: the largest frame accepted, in bytes.
    """
    global _guard  # noqa: PLW0603 - the transport is module state
    with _lock:
        if _guard is not None and _guard.keyring.path != keyring.path:
            log.warning(
                "transport_guard_rekeyed", previous=str(_guard.keyring.path), now=str(keyring.path)
            )
        rejected = _guard.rejected if _guard is not None else 0
        _guard = _Guard(keyring=keyring, listen=listen, max_frame=max_frame, rejected=rejected)
        os.environ[BASE_ADDRESS_ENV] = listen
        _tcp.serializer = _Serializer
        _tcp.ReceiveBuffer = _GuardedReceiveBuffer
        _tcp.ackMsg = _tagged_ack(_stream.ackPacket)
        _tcp.ackDataErrMsg = _tagged_ack(_stream.ackDataErrPacket)
        IPActorAddress.bindArgs = property(_bind_args)
        _tcp.TCPTransport._addedDataToIncoming = _added_data
        _tcp.TCPTransport._check_XMIT_4_done = _check_xmit
    log.debug("transport_guard_installed", listen=listen, secret=str(keyring.path))


def _restore() -> None:
    global _guard  # noqa: PLW0603 - the transport is module state
    _guard = None
    _tcp.serializer = _originals["serializer"]
    _tcp.ReceiveBuffer = _originals["ReceiveBuffer"]
    _tcp.ackMsg = _originals["ackMsg"]
    _tcp.ackDataErrMsg = _originals["ackDataErrMsg"]
    IPActorAddress.bindArgs = _originals["bindArgs"]
    _tcp.TCPTransport._addedDataToIncoming = _originals["_addedDataToIncoming"]
    _tcp.TCPTransport._check_XMIT_4_done = _originals["_check_XMIT_4_done"]


@contextlib.contextmanager
def uninstalled() -> Iterator[None]:
    """Run a block on raw Thespian (the tests that show each defect, raw benchmark rows)."""
    with _lock:
        saved = _guard
        listen_env = os.environ.pop(BASE_ADDRESS_ENV, None)
        _restore()
    try:
        yield
    finally:
        if listen_env is not None:
            os.environ[BASE_ADDRESS_ENV] = listen_env
        if saved is not None:
            install(listen=saved.listen, keyring=saved.keyring, max_frame=saved.max_frame)


def guard_installed() -> bool:
    """True once :func:`install` has guarded this process's transport."""
    return _guard is not None


def rejected_frames() -> int:
    """How many frames this process has rejected."""
    guard = _guard
    return guard.rejected if guard is not None else 0
