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

import functools
import itertools
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import structlog

from actors.core.fault_points import FaultHit, FaultPoint, ReorderWindows
from actors.core.flow import Flow, Flows
from actors.core.link_marks import (
    HandledMarks,
    LedgerTally,
    SentCounts,
    marks_path,
    sends_path,
    tally_path,
)
from actors.core.loading import load_class
from actors.core.seam import Address, FrameMeta, SeamActor, pack_address, unpack_address
from actors.core.workarounds import die_with_creator, die_with_parent, name_process, presigned
from actors.errors import Backpressure
from actors.logs import ensure_safe_logging
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import (
    ActorRef,
    _Ack,
    _Adopt,
    _Exiting,
    _Faults,
    _Gone,
    _Identified,
    _Identify,
    _Init,
    _Resolve,
    _Resolved,
    _Started,
    _StartFailed,
    _Stop,
    _Succeeded,
)
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.errors import CodecError
from protocols.faults import (
    HANG_LIMIT,
    ActorFault,
    FaultInjected,
    FaultJournal,
    GetFaultJournal,
    MessageFault,
)
from protocols.identity import Identity
from protocols.ledger import GetLedger
from protocols.supervision import KILLED, NORMAL, SubscribeEvents, error_reason
from protocols.topology import ChildSpec

__all__ = [
    "CAPABILITY_PREFIX",
    "HOST_CAPABILITY",
    "HOST_ENV",
    "WORKER_PROCESS_NAME",
    "Worker",
    "WorkerActor",
    "current_host",
    "host_capabilities",
    "host_meets",
]

HOST_ENV = "UNDERSTUDY_HOST"
"""The name of the host an actor process runs on (set by ``up`` and ``join``; inherited)."""
HOST_CAPABILITY = "understudy.host"
"""The ActorSystem capability naming its host; ``understudy.cap.<KEY>`` are its capabilities."""
CAPABILITY_PREFIX = "understudy.cap."
WORKER_PROCESS_NAME = "understudy-w"
"""The process name of every worker's own process (``/proc/<pid>/comm``)."""
HEAL_POLL = 0.05
"""Seconds between a blocked fault's (a hang's, a held stop's) looks for its heal mark."""


@functools.lru_cache(maxsize=64)
def _path(text: str) -> Path:
    """The (immutable) Path of ``text``, made once: every worker start is handed the same
    state directory and secret file."""
    return Path(text)


def current_host() -> str | None:
    """The host this process runs on (None outside a cluster)."""
    return os.environ.get(HOST_ENV) or None


def host_capabilities(name: str, capabilities: dict[str, str]) -> dict[str, str]:
    """The ActorSystem capabilities of the host ``name`` (its placement ``capabilities``)."""
    return {HOST_CAPABILITY: name} | {f"{CAPABILITY_PREFIX}{k}": v for k, v in capabilities.items()}


def host_meets(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
    """Whether an ActorSystem with ``capabilities`` satisfies a placement's ``requirements``
    (the same keys: ``understudy.host`` and ``understudy.cap.<KEY>``)."""
    return all(capabilities.get(key) == value for key, value in requirements.items())


log = structlog.get_logger("understudy.worker")
_delay_keys = itertools.count(1)


class InjectedFault(Exception):
    """Raised in a handler by a ``raise`` message fault (``protocols.faults``)."""


class Worker:
    """Base class of user workers. Override ``handle``; ``on_start`` and ``on_stop`` optionally.

    Inside a worker: ``self.args`` (the spec's args), ``self.child_id``, ``self.path``,
    ``self.stop(reason)`` and ``self.send(path, message)``; ``self.state_dir`` (the tree's
    state directory) and ``self.secret_file`` (the deployment secret, a key file for
    ``actors.core.keyring.Keyring``).
    """

    args: dict[str, Any]
    child_id: str
    path: str
    state_dir: Path
    secret_file: Path
    _host: WorkerActor

    verify_senders: ClassVar[bool] = False
    """Set True to have ``sender`` filled: the host then asks the guardian who each new sender
    address is before handing it the sender's messages (in order)."""

    _sender: Identity | None = None

    @property
    def sender(self) -> Identity | None:
        """The verified sender of the message being handled (``verify_senders`` workers only).

        None when the sender is neither an actor of this tree nor a logged-in principal.
        """
        return self._sender

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

    def report_success(self) -> None:
        """Tell the supervisor a unit of this worker's work succeeded.

        A child whose spec has a ``restart_limit`` with ``reset_on: success`` has its restart
        count (and its backoff) cleared: it may crash ``max_restarts`` times again before it
        is stopped. Without a limit it changes nothing.
        """
        self._host.report_success()

    def send(self, path: str, message: Message) -> None:
        """Send ``message`` one-way to the actor at ``path`` (e.g. ``root/workers/w1``).

        Messages to one path keep their order and travel batched (the fast path).

        Raises:
            Backpressure: too many messages already wait for that destination.
        """
        self._host.send_to_path(path, message)

    def unacknowledged(self, path: str) -> int:
        """How many messages sent to ``path`` it has not handled yet (waiting for its address,
        queued, or in flight): 0 once everything sent there was handled."""
        return self._host.unacknowledged_to(path)

    def call_later(self, seconds: float, message: Message) -> int:
        """Deliver ``message`` to this worker's ``handle`` after ``seconds``.

        Returns a token for ``cancel_call``. Timers do not survive a restart.
        """
        return self._host.set_timer(seconds, ("call_later", message))

    def cancel_call(self, token: int) -> None:
        """Cancel a ``call_later`` that has not fired yet."""
        self._host.cancel_timer(token)

    def subscribe_events(self, *, replay: bool = False) -> None:
        """Receive every supervision event (``SupervisionEvent``) in ``handle`` from now on.

        With ``replay``, the events logged so far come first. The subscription ends when this
        worker exits; subscribe again in ``on_start``.
        """
        self._host.subscribe_events(replay=replay)

    def request(self, path: str, message: Message) -> int:
        """Send a request to ``path``; its reply arrives in ``on_reply`` with the returned id.

        Several requests may be outstanding at once (pipelined); replies are matched by id.
        """
        return self._host.send_to_path(path, message, expect_reply=True)

    def defer_reply(self) -> Callable[[Message], None]:
        """Answer the message being handled later: call the returned function with the reply.

        ``handle`` then returns None and no automatic reply is sent.
        """
        return self._host.defer_reply()

    def run_flow(self, flow: Flow) -> int:
        """Run a generator that yields ``actors.core.flow`` steps (Call, Gather, Sleep) and gets
        their results back, so a multi-step conversation with other actors reads top to bottom.

        Returns the flow's id, for ``cancel_flow``.
        """
        return self._host.flows.start(flow)

    def cancel_flow(self, flow_id: int, error: Exception) -> bool:
        """Cancel the flow ``flow_id``: drop what it (and its sub-flows) wait for and raise
        ``error`` inside it at its current step. False if it has already ended."""
        return self._host.flows.cancel(flow_id, error)

    def on_reply(self, request_id: int, reply: Message) -> None:
        """Handle the reply to a ``request``; by default it goes to ``handle``."""
        result = self.handle(reply)
        if result is not None:
            log.warning("reply_result_dropped", actor=self.path, kind=result.kind)

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        """Messages sent to ``path`` were not handled there (it exited); they will not be."""

    def on_lost(self, sender: str, count: int, reason: str) -> None:
        """A sender that exited (``sender``: its path when known) had sent or queued ``count``
        messages to this worker that never arrived; they are dead-lettered in the ledger."""


@presigned
class WorkerActor(SeamActor):
    """Hosts one Worker instance under a supervisor."""

    counts_handled = True

    @staticmethod
    def actorSystemCapabilityCheck(  # noqa: N802 - Thespian's name
        capabilities: dict[str, Any], requirements: dict[str, Any]
    ) -> bool:
        """Thespian asks it which host of the convention may run a placed child."""
        return host_meets(capabilities, requirements)

    def __init__(self) -> None:
        super().__init__()
        die_with_creator()
        self._worker: Worker | None = None
        self._supervisor: Address | None = None
        self._guardian: Address | None = None
        self._path = "?"
        self._exiting = False
        self._stop_reason: str | None = None
        self._routes: dict[str, Address] = {}
        self._unrouted: dict[str, deque[tuple[Message, int]]] = {}
        self._outstanding: dict[int, str] = {}
        self._current: tuple[Address, codec.Envelope, bool] | None = None
        self.flows = Flows(self)
        self._deferred = False
        self._identities: dict[ActorRef, Identity] = {}
        self._asked: set[ActorRef] = set()
        self._gone_names: dict[ActorRef, str] = {}
        self._my_key = ""
        self._open_deferred: dict[int, tuple[Address, codec.Envelope, bool]] = {}
        self._identifying: dict[ActorRef, deque[tuple[codec.Envelope, Address, FrameMeta]]] = {}
        self._faults = FaultPoint("?")
        self._fault_layer = True
        self._tally: LedgerTally | None = None
        self._reordering = ReorderWindows()
        self._fault_dir: Path | None = None
        self._own = False
        """This worker has a process of its own (multiprocTCPBase): a kill fault can kill it."""
        self._injected: list[FaultInjected] = []
        self._delayed: dict[int, tuple[codec.Envelope, Address, FrameMeta, Identity | None]] = {}

    def describe(self) -> str:
        """Return the worker's path for logs."""
        return self._path

    def on_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Handle one decoded message according to the lifecycle in the module doc."""
        msg = env.message
        match msg:
            case _Init():
                self._init(msg, sender)
            case _Adopt():
                if msg.parent_pid != os.getpid():
                    die_with_parent(msg.parent_pid)
                self.reply(sender, env, _Ack())  # opens the connection back to the supervisor
            case _Stop():
                if self._fault_layer and not self._exiting:
                    self._slow_shutdown()
                self._orderly_stop(msg.reason)
            case _Resolved():
                self._route_resolved(msg)
            case _Identified() if sender == self._guardian:
                self._identified(msg)
            case _Faults() if sender == self._guardian:
                self._faults.set(msg.faults)
                self._fault_dir = Path(msg.fault_dir) if msg.fault_dir else None
                self.reply(sender, env, _Ack())
            case GetLedger():
                self.reply(sender, env, self.ledger.snapshot(self._path))
            case GetFaultJournal():
                self.reply(sender, env, FaultJournal(injected=list(self._injected)))
            case _:
                # The worker's inbox is open: everything else is the user's protocol.
                self._user_message(env, sender, meta)

    def _user_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        msg = env.message
        if self._exiting or self._worker is None:
            if meta.link is None:
                self.reply(sender, env, _Gone(path=self._path))
        elif isinstance(msg, ErrorReply) and env.correlation_id not in self._outstanding:
            if meta.link is not None:  # consumed here: logged, as nobody waits for it
                self.ledger.count("handled", str(sender), msg.kind)
            log.warning(
                "error_reply_received", actor=self._path, error=msg.error, detail=msg.message
            )
        elif self._worker.verify_senders and env.correlation_id not in self._outstanding:
            self._identify_then_handle(env, sender, meta)
        else:
            self._handle(env, sender, meta)

    # --- Verified senders: who is at an address, asked of the guardian once --------------------

    def _identify_then_handle(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Handle ``env`` with its sender's verified identity; ask the guardian first if needed.

        Messages from one sender wait in order while its identity is asked for.
        """
        try:
            ref = pack_address(sender)
        except ValueError:
            self._handle(env, sender, meta, identity=None)
            return
        waiting = self._identifying.get(ref)
        if waiting is not None:
            waiting.append((env, sender, meta))
        elif ref in self._identities or self._guardian is None:
            self._handle(env, sender, meta, identity=self._identities.get(ref))
        else:
            self._identifying[ref] = deque([(env, sender, meta)])
            self._ask_identity(ref)

    def _ask_identity(self, ref: ActorRef) -> None:
        """Ask the guardian who is at ``ref`` (once); it also says when that actor is gone."""
        if ref not in self._asked and self._guardian is not None:
            self._asked.add(ref)
            self.send_message(self._guardian, _Identify(address=ref))

    def on_new_sender(self, sender: Address) -> None:
        """Watch a new data-path sender: when it exits, what it sent is settled."""
        try:
            ref = pack_address(sender)
        except ValueError:
            return
        if ref not in self._identities:
            self._ask_identity(ref)

    def hold_sender(self, sender: Address) -> bool:
        """A ``verify_senders`` worker handles a sender's frames once it knows who it is."""
        if self._worker is None or not self._worker.verify_senders:
            return False
        try:
            ref = pack_address(sender)
        except ValueError:
            return False
        if ref in self._identities:
            return False
        self._ask_identity(ref)
        return True

    def _identified(self, msg: _Identified) -> None:
        ref = msg.address
        asked = ref in self._asked
        self._asked.discard(ref)
        if msg.gone or (msg.identity is None and not asked):
            # The actor that was at ``ref`` has exited: settle what it sent on the data path.
            gone = self._identities.pop(ref, None)
            if gone is not None:
                self._gone_names[ref] = gone.name
            owed = dict(msg.sends).get(self._my_key)
            self.sender_gone(unpack_address(ref), killed=msg.reason == KILLED, owed=owed)
        elif msg.identity is not None:
            self._identities[ref] = msg.identity
        self.release_sender(unpack_address(ref))
        for env, sender, meta in self._identifying.pop(ref, deque()):
            if self._exiting or self._worker is None:
                if meta.link is not None:
                    log.warning("message_not_handled", actor=self._path, kind=env.message.kind)
                self._user_message(env, sender, meta)  # an ask is answered _Gone
            else:
                self._handle(env, sender, meta, identity=msg.identity)

    def _init(self, msg: _Init, supervisor: Address) -> None:
        self._supervisor = supervisor
        self._guardian = unpack_address(msg.guardian)
        self._path = msg.path
        self._faults = FaultPoint(msg.path)
        self._fault_layer = msg.fault_injection
        self.max_message_size = msg.max_message_size
        self.resend_after, self.resend_max = msg.resend_after, msg.resend_max
        if msg.parent_pid != os.getpid():
            # Placed on another host, its parent process is that host's admin, not the
            # supervisor: it dies with the admin (the host), and the supervisor's remote exit
            # (noconnection) covers the rest.
            remote = msg.parent_host is not None and msg.parent_host != current_host()
            die_with_parent(os.getppid() if remote else msg.parent_pid)
            name_process(WORKER_PROCESS_NAME)
            ensure_safe_logging()
            self.marks = HandledMarks(path=marks_path(msg.state_dir, os.getpid()))
            self.sends = SentCounts(path=sends_path(msg.state_dir, os.getpid()))
            self._tally = LedgerTally(tally_path(msg.state_dir, os.getpid()))
            self.ledger.keep = self._tally.store
            self._own = True
        else:
            key = str(self.self_address)
            self.marks = HandledMarks(key=key)
            self.sends = SentCounts(key=key)
        self._my_key = pack_address(self.self_address).key()
        spec = msg.spec
        assert isinstance(spec, ChildSpec)  # noqa: S101 - supervisors start SupervisorActor
        try:
            cls = load_class(spec.start, Worker)
            worker = cls()
            worker.args = dict(spec.args)
            worker.child_id = spec.id
            worker.path = msg.path
            worker.state_dir = _path(msg.state_dir)
            worker.secret_file = _path(msg.secret_file)
            worker._host = self
            if msg.start_delay:
                time.sleep(msg.start_delay)  # an injected slow start
            if msg.start_failure is not None:
                raise InjectedFault(msg.start_failure)
            worker.on_start()
        except Exception as exc:  # noqa: BLE001 - any start error is a start failure
            self._exiting = True
            reason = error_reason(exc)
            log.warning("worker_start_failed", actor=self._path, reason=reason)
            self.send_message(supervisor, _StartFailed(reason=reason, offender=self._path))
            return
        self._worker = worker
        self.send_message(supervisor, _Started(pid=os.getpid(), host=current_host()))

    def _handle(
        self,
        env: codec.Envelope,
        sender: Address,
        meta: FrameMeta,
        *,
        identity: Identity | None = None,
        faulted: bool = False,
    ) -> None:
        worker = self._worker
        assert worker is not None  # noqa: S101 - checked by on_message
        on_link = meta.link is not None
        corr = env.correlation_id
        hit = None
        if (
            self._fault_layer
            and not faulted
            and not self._faults.empty
            and corr not in self._outstanding
        ):
            hit = self._fault_hit(env, identity)
            if hit is not None and self._apply_fault(hit, env, sender, meta, identity):
                return
        self._current, self._deferred = (sender, env, on_link), False
        worker._sender = identity
        if on_link:
            self.ledger.count("handled", str(sender), env.message.kind)
        try:
            if corr is not None and self._outstanding.pop(corr, None) is not None:
                if not self.flows.on_reply(corr, env.message):
                    worker.on_reply(corr, env.message)
                result = None
            else:
                if hit is not None and (
                    hit.fault.fault == "raise" or (_kill_point(hit) and not self._own)
                ):
                    msg = f"injected fault {hit.fault.id} on message {hit.ordinal}"
                    raise InjectedFault(msg)
                result = worker.handle(env.message)
                if hit is not None and hit.fault.fault == "duplicate":
                    again = worker.handle(env.message)
                    if again is not None:
                        log.info("duplicate_result_dropped", actor=self._path, kind=again.kind)
        except Exception as exc:  # noqa: BLE001 - a handler exception is one crash
            reason = self._crash_reason(exc, env.message)
            self._open_deferred.pop(env.message_id, None)
            self._answer(
                sender,
                env,
                ErrorReply(error=ErrorName.ACTOR_CRASHED, message=str(exc), reason=reason),
                on_link=on_link,
            )
            self._exit(reason)
            return
        finally:
            self._current = None
            worker._sender = None
        if _kill_point(hit) == "after_handler":
            assert hit is not None  # noqa: S101 - a kill point needs a hit
            self._kill_here(hit, on_link=on_link)
        if result is not None:
            self._answer(sender, env, result, on_link=on_link)
        elif meta.ask and not self._deferred:
            self.reply(sender, env, Ok())
        if _kill_point(hit) == "after_reply":
            assert hit is not None  # noqa: S101 - a kill point needs a hit
            self._kill_here(hit, on_link=on_link)
        self._stop_if_asked()

    # --- Injected message faults (actors.core.fault_points) ------------------------------------

    def _fault_hit(self, env: codec.Envelope, identity: Identity | None) -> FaultHit | None:
        hit = self._faults.decide(
            env.message.kind, identity.name if identity is not None else None, time.time()
        )
        if hit is not None:
            # A kill loses what this process holds: its injection is written down first.
            self._journal(
                hit.entry(self._path, env.message.kind), durable=hit.fault.fault == "kill"
            )
        return hit

    def _journal(self, entry: FaultInjected, *, durable: bool) -> None:
        """Record an injection here; ``durable``: in the fault directory at once (the
        guardian reads it from there), as this process may be killed before it reports."""
        if durable and self._own and self._fault_dir is not None:
            try:
                with (self._fault_dir / f"journal-{os.getpid()}.jsonl").open("a") as out:
                    out.write(entry.model_dump_json() + "\n")
            except OSError as exc:
                log.warning("fault_journal_unwritten", actor=self._path, error=str(exc))
            else:
                return
        self._injected.append(entry)

    def _healed(self, fault_id: str) -> bool:
        """Whether the guardian marked ``fault_id`` healed (see ``Guardian._mark_healed``)."""
        return self._fault_dir is not None and (self._fault_dir / f"healed-{fault_id}").exists()

    def _block(self, fault: ActorFault, seconds: float | None) -> None:
        """Block this worker (the injected fault) for ``seconds`` (None: up to HANG_LIMIT), or
        until the fault is healed: the guardian's heal mark is looked for every HEAL_POLL s."""
        deadline = time.monotonic() + (HANG_LIMIT if seconds is None else seconds)
        while not self._healed(fault.id):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(HEAL_POLL, left))  # the injected fault: nothing is handled meanwhile
        log.info("fault_block_healed", actor=self._path, fault_id=fault.id)

    def _slow_shutdown(self) -> None:
        """Hold a stop request for an active ``slow_shutdown``'s seconds (or until healed)."""
        hit = self._faults.slow_shutdown(time.time())
        if hit is None:
            return
        assert isinstance(hit.fault, ActorFault)  # noqa: S101 - slow_shutdown is an actor fault
        self._journal(hit.entry(self._path), durable=True)
        log.warning(
            "fault_injected",
            actor=self._path,
            fault="slow_shutdown",
            fault_id=hit.fault.id,
            seconds=hit.fault.seconds,
        )
        self._block(hit.fault, hit.fault.seconds)

    def _apply_fault(
        self,
        hit: FaultHit,
        env: codec.Envelope,
        sender: Address,
        meta: FrameMeta,
        identity: Identity | None,
    ) -> bool:
        """Apply a drop, corrupt or delay; return True when the handler must not run now."""
        fault = hit.fault
        on_link = meta.link is not None
        log.info(
            "fault_injected",
            actor=self._path,
            fault=fault.fault,
            fault_id=fault.id,
            kind=env.message.kind,
            ordinal=hit.ordinal,
        )
        if fault.fault == "drop":
            if on_link:
                self.ledger.count("dropped_by_fault", str(sender), env.message.kind)
            return True
        if fault.fault == "corrupt" and fault.corrupt == "truncated":
            if on_link:
                self.ledger.count("dropped_by_fault", str(sender), env.message.kind)
            data = codec.encode(env.message, max_size=self.max_message_size)
            try:
                codec.decode(data[: len(data) // 2], max_size=self.max_message_size)
            except CodecError as exc:
                log.warning("frame_rejected", actor=self._path, reason=str(exc), fault=fault.id)
            return True
        if fault.fault == "corrupt":
            if on_link:
                self.ledger.count("dropped_by_fault", str(sender), env.message.kind)
            self._answer(
                sender,
                env,
                ErrorReply(
                    error="MessageInvalid",
                    message=f"{env.message.kind}: corrupted by injected fault {fault.id}",
                ),
                on_link=on_link,
            )
            return True
        if _kill_point(hit) == "before_handler" and self._own:
            self._kill_here(hit, on_link=False)
        if isinstance(fault, ActorFault) and fault.fault == "hang":
            self._block(fault, fault.seconds)
            return False
        if isinstance(fault, MessageFault) and fault.fault == "delay":
            assert fault.delay is not None  # noqa: S101 - a delay fault has one
            seconds = fault.delay.draw(self._faults.rng(fault))
            key = next(_delay_keys)
            self._delayed[key] = (env, sender, meta, identity)
            self.set_timer(seconds, ("fault_delay", key))
            return True
        if isinstance(fault, MessageFault) and fault.fault == "reorder":
            key = next(_delay_keys)
            self._delayed[key] = (env, sender, meta, identity)
            if self._reordering.hold(fault.id, key, fault.window):
                self._release_reordered(fault.id, self._faults.rng(fault))
            elif self._reordering.first(fault.id):
                # A partial window is released after window_seconds: nothing is held forever.
                self.set_timer(fault.window_seconds, ("fault_reorder", fault.id))
            return True
        return False

    def _release_reordered(self, fault_id: str, rng: random.Random | None) -> None:
        """Hand the messages a reorder fault holds to the handler: shuffled by ``rng``, or
        in arrival order without one (healed meanwhile). If this worker is exiting they
        count dropped by the fault."""
        for key in self._reordering.release(fault_id, rng):
            held = self._delayed.pop(key, None)
            if held is None:
                continue
            if self._exiting or self._worker is None:
                self._drop_delayed([held])
                continue
            env, sender, meta, identity = held
            self._handle(env, sender, meta, identity=identity, faulted=True)

    def _kill_here(self, hit: FaultHit, *, on_link: bool) -> None:
        """SIGKILL this worker's own process at an injected crash point. After its handler
        ran, a data-path message is marked handled first, so its sender never reports it
        undelivered."""
        if on_link:
            self.mark_handled_now()
        log.warning(
            "fault_kill",
            actor=self._path,
            fault_id=hit.fault.id,
            point=_kill_point(hit),
            ordinal=hit.ordinal,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    def _crash_reason(self, exc: Exception, message: Message) -> str:
        """Log a handler exception as this worker's crash and return its exit reason."""
        reason = error_reason(exc)
        log.error("worker_crashed", actor=self._path, reason=reason, kind=message.kind)
        return reason

    def _stop_if_asked(self) -> None:
        """Carry out a ``self.stop(reason)`` made by the handler that just returned."""
        if self._stop_reason is not None:
            self._orderly_stop(self._stop_reason)

    def _answer(
        self, to: Address, request: codec.Envelope, message: Message, *, on_link: bool
    ) -> None:
        if on_link:
            self.link_send(to, message, correlation_id=request.message_id)
        else:
            self.reply(to, request, message)

    def defer_reply(self) -> Callable[[Message], None]:
        """Capture the current request so that the worker can answer it later."""
        if self._current is None:
            msg = "defer_reply() can only be called while handling a message"
            raise RuntimeError(msg)
        sender, env, on_link = self._current
        self._deferred = True
        self._open_deferred[env.message_id] = (sender, env, on_link)

        def send_reply(message: Message) -> None:
            if self._open_deferred.pop(env.message_id, None) is None:
                log.warning("deferred_reply_dropped", actor=self._path, kind=message.kind)
                return  # answered already, or failed when this worker exited
            self._answer(sender, env, message, on_link=on_link)

        return send_reply

    def on_wakeup(self, payload: Any) -> None:
        """A ``call_later`` fired: hand its message to the worker."""
        if isinstance(payload, tuple) and payload[0] == "flow":
            self.flows.on_timer(payload[1])
            return
        if isinstance(payload, tuple) and payload[0] == "fault_reorder":
            fault = self._faults.active(payload[1])
            self._release_reordered(payload[1], None if fault is None else self._faults.rng(fault))
            return
        if isinstance(payload, tuple) and payload[0] == "fault_delay":
            held = self._delayed.pop(payload[1], None)
            if held is not None and not self._exiting and self._worker is not None:
                env, sender, meta, identity = held
                self._handle(env, sender, meta, identity=identity, faulted=True)
            elif held is not None:
                self._drop_delayed([held])
            return
        if not (isinstance(payload, tuple) and payload[0] == "call_later"):
            return
        worker = self._worker
        if self._exiting or worker is None:
            return
        message: Message = payload[1]
        try:
            result = worker.handle(message)
        except Exception as exc:  # noqa: BLE001 - a handler exception is one crash
            self._exit(self._crash_reason(exc, message))
            return
        if result is not None:
            log.warning("timer_result_dropped", actor=self._path, kind=result.kind)
        self._stop_if_asked()

    def on_undelivered_ids(self, to: str, message_ids: list[int], reason: str) -> None:
        """Requests that will never be answered fail now with ActorNotFound."""
        for mid in message_ids:
            if self._outstanding.pop(mid, None) is not None:
                self._fail_request(
                    mid, ErrorReply(error=ErrorName.ACTOR_NOT_FOUND, message=f"{to}: {reason}")
                )

    def accepting(self) -> bool:
        """Refuse data-path messages once exiting: the sender reports them undelivered."""
        return not self._exiting and self._worker is not None

    def on_lost(self, sender: Address, count: int, reason: str) -> None:
        """Pass the count of a gone sender's lost messages to the worker's hook."""
        if self._worker is None or self._exiting:
            return
        name = str(sender)
        try:
            ref = pack_address(sender)
        except ValueError:
            ref = None
        if ref is not None:
            name = self._gone_names.pop(ref, name)
        try:
            self._worker.on_lost(name, count, reason)
        except Exception as exc:  # noqa: BLE001 - a handler exception is one crash
            self._exit(self._crash_reason(exc, ErrorReply(error="lost", message=reason)))

    def on_undelivered(self, to: str, messages: list[Message], reason: str) -> None:
        """Pass undelivered messages to the worker's hook."""
        if self._worker is not None and not self._exiting:
            self._worker.on_undelivered(to, messages, reason)

    def report_success(self) -> None:
        """Send ``_Succeeded`` to the supervisor (ordered before a later ``_Exiting``)."""
        if self._supervisor is not None and not self._exiting:
            self.send_message(self._supervisor, _Succeeded())

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
        if self._tally is not None:
            # This incarnation reports its ledger as it exits: its supervisor, which may look
            # for the tally as soon as it hears of the exit, must not count it a second time.
            self._tally.discard()
        self._fail_deferred(reason)
        if self._supervisor is not None:
            self.send_message(self._supervisor, _Exiting(reason=reason))
        else:
            self.stop_actor(self.self_address)

    def _fail_deferred(self, reason: str) -> None:
        """Requests this worker promised to answer later fail now: it is exiting."""
        open_deferred, self._open_deferred = self._open_deferred, {}
        for sender, env, on_link in open_deferred.values():
            self._answer(
                sender,
                env,
                ErrorReply(
                    error=ErrorName.ACTOR_EXITED,
                    message=f"{self._path} exited before answering: {reason}",
                    reason=reason,
                ),
                on_link=on_link,
            )

    def _drop_delayed(
        self, held: list[tuple[codec.Envelope, Address, FrameMeta, Identity | None]]
    ) -> None:
        """Messages a delay fault held when this worker exited: dropped by the fault."""
        for env, sender, meta, _identity in held:
            if meta.link is not None:
                self.ledger.count("dropped_by_fault", str(sender), env.message.kind)
        if held:
            log.warning("delayed_messages_dropped", actor=self._path, count=len(held))

    def on_exit_request(self) -> None:
        """The supervisor stops this process: what was never sent is dead-lettered (counted and
        logged, never silently gone), and the final ledger goes to the guardian."""
        delayed, self._delayed = list(self._delayed.values()), {}
        self._drop_delayed(delayed)
        unsent = self.take_unsent() + [
            (path, message) for path, queue in self._unrouted.items() for message, _ in queue
        ]
        self._unrouted.clear()
        for label, message in unsent:
            self.ledger.count("dead_lettered", label, message.kind)
        if unsent:
            log.warning(
                "messages_dead_lettered",
                actor=self._path,
                count=len(unsent),
                kinds=sorted({m.kind for _, m in unsent}),
                reason="the sender exited with them queued",
            )
        if self._guardian is not None and self._worker is not None:
            if self._tally is not None:
                self._tally.discard()  # reported below: the supervisor must not count it again
            self.send_message(self._guardian, self.ledger.snapshot(self._path))
        if self._guardian is not None and self._injected:
            self.send_message(self._guardian, FaultJournal(injected=self._injected))

    def on_internal_error(self, exc: Exception) -> None:
        """An error in the host itself is a crash of this worker."""
        super().on_internal_error(exc)
        if not self._exiting:
            self._exit(error_reason(exc))

    # --- send(path, message): resolution through the guardian -------------------------------

    def forget_request(self, request_id: int) -> None:
        """Stop waiting for the reply to ``request_id`` (it timed out)."""
        self._outstanding.pop(request_id, None)

    def subscribe_events(self, *, replay: bool) -> None:
        """Ask the guardian for supervision events."""
        if self._guardian is not None:
            self.send_message(self._guardian, SubscribeEvents(path=self._path, replay=replay))

    def unacknowledged_to(self, path: str) -> int:
        """Messages sent to ``path`` not yet handled there (unresolved, queued, in flight)."""
        address = self._routes.get(path)
        if address is None:
            return len(self._unrouted.get(path, ()))
        return self.unacknowledged(address)

    def send_to_path(self, path: str, message: Message, *, expect_reply: bool = False) -> int:
        """Send on the data path to ``path``, resolving it through the guardian once."""
        address = self._routes.get(path)
        if address is not None:
            mid = self.link_send(address, message, label=path)
        else:
            mid = codec.new_message_id()
            pending = self._unrouted.get(path)
            if pending is None:
                pending = self._unrouted[path] = deque()
                if self._guardian is not None:
                    self.send_message(self._guardian, _Resolve(path=path, watch=True))
            if len(pending) >= self.max_queue:
                msg = f"{len(pending)} messages already wait for {path} to be resolved"
                raise Backpressure(msg)
            pending.append((message, mid))
            self.ledger.count("sent", path, message.kind)
        if expect_reply:
            self._outstanding[mid] = path
        return mid

    def _fail_requests_to(self, path: str, *, keep: set[int], why: _Resolved) -> None:
        """The actor at ``path`` exited: every request it was sent (acknowledged or not) fails
        now with ActorExited, except ``keep`` (queued, never sent: they go to the next one)."""
        reason = why.reason or why.detail or "exited"
        for mid in [m for m, p in self._outstanding.items() if p == path and m not in keep]:
            del self._outstanding[mid]
            failure = ErrorReply(
                error=ErrorName.ACTOR_EXITED,
                message=f"{path} exited before answering: {reason}",
                reason=reason,
            )
            self._fail_request(mid, failure)

    def _fail_request(self, mid: int, failure: ErrorReply) -> None:
        """Answer the pending request ``mid`` with ``failure``: its flow raises it, else the
        worker's ``on_reply`` gets it (as any reply; raising there is a crash)."""
        if self.flows.on_reply(mid, failure):
            return
        worker = self._worker
        if worker is None or self._exiting:
            return
        try:
            worker.on_reply(mid, failure)
        except Exception as exc:  # noqa: BLE001 - a handler exception is one crash
            self._exit(self._crash_reason(exc, failure))

    def _route_resolved(self, msg: _Resolved) -> None:
        old = self._routes.get(msg.path)
        new = unpack_address(msg.address) if msg.address is not None else None
        # Queued messages were never sent: they keep their ids (a flow may await a reply).
        carried: list[tuple[Message, int]] = []
        if old is not None and old != new:
            del self._routes[msg.path]
            # Requests it was sent fail first, with its exit reason (acknowledged or not).
            unsent = self.queued_ids(old) | {mid for _, mid in self._unrouted.get(msg.path, ())}
            self._fail_requests_to(msg.path, keep=unsent, why=msg)
            marks = None if msg.marks is None else {n: (s, c) for n, s, c in msg.marks}
            carried = self.fail_link(old, f"{msg.path} exited", marks=marks)
        pending = carried + list(self._unrouted.pop(msg.path, deque()))
        if new is None:
            if msg.detail == "restarting":
                self._unrouted[msg.path] = deque(pending)
                return
            reason = msg.detail or "no actor at that path"
            self.on_undelivered_ids(msg.path, [mid for _, mid in pending], reason)
            if pending:
                for message, _mid in pending:
                    self.ledger.count("dead_lettered", msg.path, message.kind)
                log.warning(
                    "dead_letter", actor=self._path, to=msg.path, count=len(pending), reason=reason
                )
                self.on_undelivered(msg.path, [m for m, _ in pending], reason)
            return
        self._routes[msg.path] = new
        for queued, mid in pending:
            self.link_send(new, queued, label=msg.path, message_id=mid)


def _kill_point(hit: FaultHit | None) -> str | None:
    """The crash point of a kill fault's hit (None for any other hit, or none)."""
    if hit is not None and isinstance(hit.fault, ActorFault) and hit.fault.fault == "kill":
        return hit.fault.point
    return None
