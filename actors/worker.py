"""Worker: the class users subclass, and WorkerActor, the Thespian actor that hosts one.

A worker is plain Python: ``on_start`` runs at every (re)start, ``handle`` answers messages
(its return value is the reply), ``on_stop`` runs on orderly stops. The hosting actor turns
what happens into supervision facts for its supervisor:

    on_start raises         -> _StartFailed("error:<Type>: <message>")
    handle raises           -> ErrorReply(ActorCrashed) to the sender, _Exiting(<that reason>)
    self.stop(reason)       -> on_stop(reason), _Exiting(reason)
    _Stop from supervisor   -> on_stop("shutdown"), _Exiting("shutdown")

After reporting _Exiting the actor handles nothing more: requests get ``_Gone`` (not handled,
ask again) until the supervisor stops the process. So a handler runs exactly once per message.
"""

from __future__ import annotations

import importlib
import os
from collections import deque
from typing import Any

import structlog
from thespian.actors import ActorAddress, ActorExitRequest

from actors._base import SeamActor, unpack_address
from actors._workarounds import die_with_parent
from protocols import codec
from protocols._base import Message
from protocols.common import ErrorReply, Ok
from protocols.supervision import (
    NORMAL,
    _Exiting,
    _Gone,
    _Init,
    _Resolve,
    _Resolved,
    _Started,
    _StartFailed,
    _Stop,
    error_reason,
)
from protocols.topology import ChildSpec

log = structlog.get_logger("understudy.worker")


class Worker:
    """Base class of user workers. Override ``handle``; ``on_start`` and ``on_stop`` optionally.

    Inside a worker: ``self.args`` (the spec's args), ``self.child_id``, ``self.path``,
    ``self.stop(reason)`` and ``self.send(path, message)``.
    """

    args: dict[str, Any]
    child_id: str
    path: str
    _host: WorkerActor

    def on_start(self) -> None:
        """Run at every (re)start, before any message; raising makes the start fail."""

    def handle(self, message: Message) -> Message | None:
        """Handle one message; the returned message is sent back to the sender."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {message.kind!r}")

    def on_stop(self, reason: str) -> None:
        """Run on an orderly stop (supervisor shutdown or ``self.stop``), never after a crash."""

    def stop(self, reason: str = NORMAL) -> None:
        """Exit with ``reason`` once the current message is handled."""
        self._host.request_stop(reason)

    def send(self, path: str, message: Message) -> None:
        """Send ``message`` one-way to the actor at ``path`` (e.g. ``root/workers/w1``)."""
        self._host.send_to_path(path, message)


def load_worker_class(start: str) -> type[Worker]:
    """Import ``module:Class`` and check that it is a Worker subclass.

    Raises:
        ImportError, AttributeError, TypeError: with a message naming ``start``.
    """
    module_name, _, class_name = start.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        msg = f"{start} is not a subclass of actors.Worker"
        raise TypeError(msg)
    return cls


class WorkerActor(SeamActor):
    """Hosts one Worker instance under a supervisor."""

    def __init__(self) -> None:
        super().__init__()
        self._worker: Worker | None = None
        self._supervisor: ActorAddress | None = None
        self._guardian: ActorAddress | None = None
        self._path = "?"
        self._exiting = False
        self._stop_reason: str | None = None
        self._routes: dict[str, ActorAddress] = {}
        self._unrouted: dict[str, deque[Message]] = {}

    def describe(self) -> str:
        """Return the worker's path for logs."""
        return self._path

    def on_message(
        self, env: codec.Envelope, sender: ActorAddress, meta: dict[str, Any] | None
    ) -> None:
        """Handle one decoded message according to the lifecycle in the module doc."""
        msg = env.message
        if isinstance(msg, _Init):
            self._init(msg, sender)
        elif isinstance(msg, _Stop):
            self._orderly_stop(msg.reason)
        elif isinstance(msg, _Resolved):
            self._route_resolved(msg)
        elif self._exiting or self._worker is None:
            self.reply(sender, env, _Gone(path=self._path))
        elif isinstance(msg, ErrorReply):
            log.warning("error_reply_received", actor=self._path, error=msg.error,
                        detail=msg.message)
        else:
            self._handle(env, sender, meta)

    def _init(self, msg: _Init, supervisor: ActorAddress) -> None:
        self._supervisor = supervisor
        self._guardian = unpack_address(msg.guardian)
        self._path = msg.path
        self.max_message_size = msg.max_message_size
        if msg.parent_pid != os.getpid():
            die_with_parent(msg.parent_pid)
        spec = msg.spec
        assert isinstance(spec, ChildSpec)  # noqa: S101 - supervisors start SupervisorActor
        try:
            cls = load_worker_class(spec.start)
            worker = cls()
            worker.args = dict(spec.args)
            worker.child_id = spec.id
            worker.path = msg.path
            worker._host = self  # noqa: SLF001 - the host wires its own worker
            worker.on_start()
        except Exception as exc:  # noqa: BLE001 - any start error is a start failure
            self._exiting = True
            reason = error_reason(exc)
            log.warning("worker_start_failed", actor=self._path, reason=reason)
            self.send_message(supervisor, _StartFailed(reason=reason, offender=self._path))
            return
        self._worker = worker
        self.send_message(supervisor, _Started(pid=os.getpid()))

    def _handle(self, env: codec.Envelope, sender: ActorAddress, meta: dict[str, Any] | None) -> None:
        assert self._worker is not None  # noqa: S101 - checked by on_message
        try:
            result = self._worker.handle(env.message)
        except Exception as exc:  # noqa: BLE001 - a handler exception is one crash
            reason = error_reason(exc)
            log.error("worker_crashed", actor=self._path, reason=reason, kind=env.message.kind)
            self.reply(sender, env, ErrorReply(error="ActorCrashed", message=str(exc),
                                               reason=reason))
            self._exit(reason)
            return
        if result is not None:
            self.reply(sender, env, result)
        elif meta is not None and meta.get("ask"):
            self.reply(sender, env, Ok())
        if self._stop_reason is not None:
            self._orderly_stop(self._stop_reason)

    def request_stop(self, reason: str) -> None:
        """Mark the worker to stop with ``reason`` once the current message is handled."""
        self._stop_reason = reason

    def _orderly_stop(self, reason: str) -> None:
        if self._exiting:
            return
        if self._worker is not None:
            try:
                self._worker.on_stop(reason)
            except Exception as exc:  # noqa: BLE001 - cleanup errors are logged, not fatal
                log.error("worker_on_stop_failed", actor=self._path, error=error_reason(exc))
        self._exit(reason)

    def _exit(self, reason: str) -> None:
        self._exiting = True
        if self._supervisor is not None:
            self.send_message(self._supervisor, _Exiting(reason=reason))
        else:
            self.send(self.myAddress, ActorExitRequest())

    def on_internal_error(self, exc: Exception) -> None:
        """An error in the host itself is a crash of this worker."""
        super().on_internal_error(exc)
        if not self._exiting:
            self._exit(error_reason(exc))

    # --- send(path, message): resolution through the guardian -------------------------------

    def send_to_path(self, path: str, message: Message) -> None:
        """Send one-way to ``path``, resolving it through the guardian once."""
        address = self._routes.get(path)
        if address is not None:
            self.send_message(address, message)
            return
        pending = self._unrouted.get(path)
        if pending is None:
            self._unrouted[path] = deque([message])
            if self._guardian is not None:
                self.send_message(self._guardian, _Resolve(path=path, watch=True))
        else:
            pending.append(message)

    def _route_resolved(self, msg: _Resolved) -> None:
        pending = self._unrouted.pop(msg.path, deque())
        if msg.address is None:
            self._routes.pop(msg.path, None)
            for dropped in pending:
                log.warning("dead_letter", actor=self._path, to=msg.path, kind=dropped.kind,
                            reason="no actor at that path")
            return
        address = unpack_address(msg.address)
        self._routes[msg.path] = address
        for queued in pending:
            self.send_message(address, queued)
