"""Guardian: the root supervisor's parent, the path registry and the event log of a runtime.

Like Akka's user guardian, it sits above the tree. It

* boots the root supervisor and records the root's exit reason (``Runtime.exit_reason``);
* keeps the path registry: supervisors register each child once it has started (and wait for
  the acknowledgement, so a path is resolvable before any reply mentions it) and unregister it
  when its process is gone, marking a pending restart; resolutions of a path whose restart is
  pending, or whose known address the asker found dead, wait for the change;
* keeps the ordered event log: supervisors number their reports, the guardian appends them in
  that order per supervisor and gives every event a global ``seq``; ``GetEvents`` can wait
  for a barrier so a caller sees the events its own calls caused;
* logs dead letters (messages Thespian could not deliver): nothing is dropped silently;
* keeps the book of verified identities (``actors.core.identities``): the registered actors,
  the owner program that booted the tree (``system``) and the clients that logged in as a
  principal; workers that verify their senders ask it who an address is (``_Identify``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

import structlog

from actors.core.fault_points import resolve_pick
from actors.core.identities import IdentityBook, LoginRefused
from actors.core.ledger import merge
from actors.core.seam import Address, FrameMeta, SeamActor, pack_address, unpack_address
from actors.core.supervisor import SupervisorActor
from actors.core.workarounds import die_with_parent, kill_process_tree, process_alive
from actors.logs import ensure_safe_logging
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import (
    ActorRef,
    _Ack,
    _Boot,
    _Challenge,
    _Challenged,
    _Exiting,
    _Faults,
    _Gone,
    _HostChanged,
    _HostTable,
    _Identified,
    _Identify,
    _Init,
    _KeeperStart,
    _Login,
    _Register,
    _Report,
    _Resolve,
    _Resolved,
    _ShutdownTree,
    _Started,
    _StartFailed,
    _Stop,
    _Unregister,
)
from protocols.cluster import GetHosts, HostInfo, Hosts
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.errors import CodecError
from protocols.faults import (
    ActorFault,
    FaultInjected,
    FaultJournal,
    FaultsApplied,
    GetFaultJournal,
    HealFaults,
    InjectFault,
    MessageFault,
)
from protocols.ledger import GetLedger, LedgerSnapshot, RetiredLedgers
from protocols.supervision import (
    KILLED,
    EventName,
    Events,
    GetEvents,
    SubscribeEvents,
    SupervisionEvent,
)

__all__ = [
    "GUARDIAN_INBOX",
    "GUARDIAN_NAME",
    "MAX_CLIENTS",
    "OWNER_CHECK_INTERVAL",
    "REPORT_DEPENDENCY_TIMEOUT",
    "Guardian",
    "GuardianInbox",
]

log = structlog.get_logger("understudy.guardian")

GUARDIAN_NAME = "understudy.guardian"
# Seconds between checks that the program owning this ActorSystem is still alive.
OWNER_CHECK_INTERVAL = 1.0
# Runtimes (external askers) remembered for answering their dead letters.
MAX_CLIENTS = 16
RECENTLY_GONE = 4096
"""How many exited actors' addresses the guardian remembers (to answer a late _Identify)."""
# How long an event waits for the child events that caused it before it is logged anyway.
REPORT_DEPENDENCY_TIMEOUT = 2.0


@dataclass
class _Held:
    """A request answered later: a resolution waiting for a change, or an events barrier."""

    requester: Address
    env: codec.Envelope
    token: int
    expired: bool = False


@dataclass
class _Registration:
    address: Address
    pid: int | None
    host: str | None = None


@dataclass
class _Stream:
    """The reports of one supervisor incarnation: the next number expected and early ones."""

    next_n: int = 1
    early: dict[int, _Report] = field(default_factory=dict)


GuardianInbox = (
    _Resolve
    | _Report
    | _Register
    | _Unregister
    | GetEvents
    | SubscribeEvents
    | _Boot
    | _Started
    | _StartFailed
    | _Exiting
    | _ShutdownTree
    | ErrorReply
    | _Gone
    | _Identify
    | _Challenge
    | _Login
    | LedgerSnapshot
    | GetLedger
    | GetHosts
    | _HostChanged
    | InjectFault
    | HealFaults
    | GetFaultJournal
    | FaultJournal
    | FaultsApplied
    | _Ack
)
"""What the guardian accepts: registrations, resolutions, reports, events and the root's life."""
GUARDIAN_INBOX = (
    _Resolve,
    _Report,
    _Register,
    _Unregister,
    GetEvents,
    SubscribeEvents,
    _Boot,
    _Started,
    _StartFailed,
    _Exiting,
    _ShutdownTree,
    ErrorReply,
    _Gone,
    _Identify,
    _Challenge,
    _Login,
    LedgerSnapshot,
    GetLedger,
    GetHosts,
    _HostChanged,
    InjectFault,
    HealFaults,
    GetFaultJournal,
    FaultJournal,
    FaultsApplied,
    _Ack,
)

HOST_KEEPER = "actors.cluster.keeper.HostKeeper"
FAULT_ACK_TIMEOUT = 2.0
"""How long ``inject`` / ``heal`` wait for the actors to acknowledge the new fault set."""
_fault_tokens = itertools.count(1)
"""The host keeper's class, named (the core does not import the cluster package)."""


class Guardian(SeamActor):
    """The parent of the root supervisor; one per runtime."""

    def __init__(self) -> None:
        super().__init__()
        self._root: Address | None = None
        self._root_path = "root"
        self._root_spec: Any = None
        self._boot_request: tuple[Address, codec.Envelope] | None = None
        self._exit_reason: str | None = None
        self._root_reason: str | None = None
        self._shutdown_waiters: list[tuple[Address, codec.Envelope]] = []
        self._registry: dict[str, _Registration] = {}
        self._pending: set[str] = set()
        self._watchers: dict[str, dict[str, Address]] = {}
        self._held_resolves: list[_Held] = []
        self._held_events: list[_Held] = []
        self._events: list[SupervisionEvent] = []
        self._streams: dict[str, _Stream] = {}
        self._waiting_streams: set[str] = set()
        self._blocked: set[tuple[str, int]] = set()
        self._overdue: set[tuple[str, int]] = set()
        self._tokens = 0
        self._clients: dict[str, Address] = {}
        self._subscribers: dict[str, Address] = {}
        self._owner_pid: int | None = None
        self._orphaned = False
        self._timer_ids: dict[int, int] = {}
        self._book = IdentityBook(state_dir=".understudy", principals={})
        self._identity_watchers: dict[ActorRef, dict[str, Address]] = {}
        # exited actors' refs -> (exit reason, messages they had queued per receiver)
        self._recently_gone: dict[ActorRef, tuple[str, list[tuple[str, int]]]] = {}
        self._retired_ledgers: dict[str, LedgerSnapshot] = {}
        self._recovered_ledgers = 0
        self._fault_injection = True
        """Killed incarnations whose ledger was read from their tally file."""
        self._hosts: dict[str, HostInfo] = {}
        self._faults: list[tuple[MessageFault | ActorFault, float]] = []
        self._state_dir = ".understudy"
        self._fault_dir: Path | None = None
        self._fault_journal: list[FaultInjected] = []
        self._fault_ids = 0
        self._fault_waits: dict[int, tuple[set[int], tuple[Address, codec.Envelope, Message]]] = {}
        self._leaving: set[str] = set()
        self._keeper: Address | None = None

    def describe(self) -> str:
        """Return the guardian's name for logs."""
        return "guardian"

    def on_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Dispatch one message; see the module doc."""
        msg = env.message
        if meta.ask:
            self._remember_client(sender)
        if isinstance(msg, GUARDIAN_INBOX):
            self._dispatch(msg, sender, env)
        else:
            self._refuse_unexpected(msg, sender, env)

    def _refuse_unexpected(self, msg: Message, sender: Address, env: codec.Envelope) -> None:
        log.warning("unexpected_message", actor="guardian", kind=msg.kind)
        self.reply(
            sender,
            env,
            ErrorReply(
                error=ErrorName.NOT_SUPPORTED,
                message=f"the guardian does not handle {msg.kind!r}",
            ),
        )

    def _dispatch(self, msg: GuardianInbox, sender: Address, env: codec.Envelope) -> None:
        from_root = sender == self._root
        match msg:
            case _Resolve():
                self._resolve(msg, sender, env)
            case _Report():
                self._report(msg)
            case _Register():
                self._register(msg, sender, env)
            case _Unregister():
                if msg.ledger is not None:
                    self._recovered_ledgers += 1
                    held = self._retired_ledgers.get(msg.path)
                    self._retired_ledgers[msg.path] = (
                        msg.ledger if held is None else merge(held, msg.ledger)
                    )
                self._unregister(
                    msg.path,
                    msg.address,
                    pending=msg.pending,
                    reason=msg.reason,
                    marks=msg.marks,
                    sends=msg.sends,
                )
            case GetEvents():
                self._get_events(msg, sender, env)
            case SubscribeEvents():
                self._subscribers[msg.path] = sender
                if msg.replay:
                    for event in self._events:
                        self.send_message(sender, event)
            case _Boot():
                self._boot(msg, sender, env)
            case _Started() if from_root:
                self._root_started(msg)
            case _StartFailed() if from_root:
                self._root_start_failed(msg)
            case _Exiting() if from_root:
                self._root_reason = msg.reason
                self.stop_actor(sender)
            case _Started() | _StartFailed() | _Exiting():  # not from the root
                self._refuse_unexpected(msg, sender, env)
            case _ShutdownTree():
                self._shutdown_tree(sender, env)
            case ErrorReply():
                log.warning("error_reply_received", error=msg.error, detail=msg.message)
            case _Gone():
                log.debug("gone_reply_ignored", path=msg.path)  # a notice reached an exiting actor
            case _Identify():
                self._identify(msg, sender)
            case _Challenge():
                self._challenge(sender, env)
            case _Login():
                self._login(msg, sender, env)
            case LedgerSnapshot():
                held = self._retired_ledgers.get(msg.path)
                self._retired_ledgers[msg.path] = msg if held is None else merge(held, msg)
            case GetHosts():
                self.reply(sender, env, self._host_list())
            case InjectFault() if not self._fault_injection:
                self.reply(
                    sender,
                    env,
                    ErrorReply(
                        error=ErrorName.NOT_SUPPORTED,
                        message="fault injection is off in this deployment "
                        "(system.fault_injection: false)",
                    ),
                )
            case InjectFault():
                self._inject_fault(msg, sender, env)
            case HealFaults():
                healed = [f.id for f, _ in self._faults if not msg.ids or f.id in msg.ids]
                self._faults = [(f, at) for f, at in self._faults if f.id not in healed]
                self._mark_healed(healed)
                log.info("faults_healed", ids=healed)
                self._broadcast_faults((sender, env, Ok()))
            case FaultsApplied():  # what the runtime did itself: a kill now, a pause
                self._fault_journal += msg.injected
                self.reply(sender, env, Ok())
            case _Ack():
                self._fault_acked(env.correlation_id)
            case GetFaultJournal():
                self.reply(
                    sender,
                    env,
                    FaultJournal(
                        injected=self._fault_journal + self._durable_journal(),
                        active=[f for f, _ in self._faults],
                    ),
                )
            case FaultJournal():  # an exiting worker's injections
                self._fault_journal += msg.injected
            case _HostChanged():
                if sender == self._keeper:
                    self._host_changed(msg)
                else:
                    self._refuse_unexpected(msg, sender, env)
            case GetLedger():
                killed = sum(
                    1 for e in self._events if e.event == "child_exited" and e.reason == KILLED
                )
                killed = max(0, killed - self._recovered_ledgers)
                self.reply(
                    sender,
                    env,
                    RetiredLedgers(
                        snapshots=list(self._retired_ledgers.values()), unreported=killed
                    ),
                )
            case _:
                assert_never(msg)

    # --- The root -------------------------------------------------------------------------

    def _boot(self, msg: _Boot, sender: Address, env: codec.Envelope) -> None:
        if self._root is not None or self._exit_reason is not None:
            self.reply(
                sender,
                env,
                ErrorReply(
                    error=ErrorName.ALREADY_STARTED, message="this runtime's root is already booted"
                ),
            )
            return
        self.handleDeadLetters(startHandling=True)
        self.max_message_size = msg.max_message_size
        self.resend_after, self.resend_max = msg.resend_after, msg.resend_max
        self._fault_injection = msg.fault_injection
        self._state_dir = msg.state_dir
        if msg.owner_pid is not None and msg.owner_pid != os.getpid():
            # The admin daemon outlives the program that started it (Thespian); this guardian
            # dies with the admin, and stops everything if that program dies without saying so.
            die_with_parent(os.getppid())
            ensure_safe_logging()
            self._owner_pid = msg.owner_pid
            self.set_timer(OWNER_CHECK_INTERVAL, ("owner", 0))
        self._root_path = msg.spec.id
        self._root_spec = msg.spec
        self._start_cluster(msg)
        self._book = IdentityBook(
            state_dir=msg.state_dir,
            principals={name: tuple(roles) for name, roles in msg.principals.items()},
        )
        owner = self._ref(sender)
        if owner is not None:
            self._book.set_owner(owner)
        self._boot_request = (sender, env)
        self._root = self.spawn(SupervisorActor)
        self.send_message(
            self._root,
            _Init(
                path=self._root_path,
                spec=msg.spec,
                guardian=pack_address(self.self_address),
                parent_pid=os.getpid(),
                max_message_size=msg.max_message_size,
                resend_after=msg.resend_after,
                resend_max=msg.resend_max,
                fault_injection=msg.fault_injection,
                state_dir=msg.state_dir,
                secret_file=msg.secret_file,
                hosts=self._host_table().hosts,
            ),
        )

    def _root_started(self, msg: _Started) -> None:
        assert self._root is not None  # noqa: S101
        self._registry[self._root_path] = _Registration(self._root, msg.pid)
        root = self._ref(self._root)
        if root is not None:
            self._book.register_actor(root, self._root_path)
        if self._boot_request is not None:
            requester, env = self._boot_request
            self._boot_request = None
            self.reply(requester, env, Ok())

    def _root_start_failed(self, msg: _StartFailed) -> None:
        self._root_reason = msg.reason
        if self._root is not None:
            self.stop_actor(self._root)
        if self._boot_request is not None:
            requester, env = self._boot_request
            self._boot_request = None
            self.reply(
                requester,
                env,
                ErrorReply(
                    error=ErrorName.START_FAILED,
                    message=msg.offender or self._root_path,
                    reason=msg.reason,
                ),
            )

    def on_child_exited(self, address: Address) -> None:
        """The root's process is gone: record the exit and release everyone waiting."""
        if address != self._root:
            return
        reason = self._root_reason or KILLED
        self._exit_reason = reason
        self._root = None
        if self._root_reason is None:  # killed: the root could not report its own exit
            self._append(
                SupervisionEvent(
                    seq=len(self._events) + 1,
                    time=time.time(),
                    supervisor="guardian",
                    child_id=self._root_path,
                    event="child_exited",
                    reason=reason,
                )
            )
        log.info("root_exited", reason=reason)
        self._unregister_tree("")
        if self._boot_request is not None:
            requester, env = self._boot_request
            self._boot_request = None
            self.reply(
                requester,
                env,
                ErrorReply(error=ErrorName.START_FAILED, message=self._root_path, reason=reason),
            )
        for requester, env in self._shutdown_waiters:
            self.reply(requester, env, Ok())
        self._shutdown_waiters.clear()
        self._release_events(force=False)
        if self._orphaned:
            self._stop_admin()

    def _check_owner(self) -> None:
        if self._owner_pid is None:
            return
        if process_alive(self._owner_pid):
            self.set_timer(OWNER_CHECK_INTERVAL, ("owner", 0))
            return
        log.error("owner_died", owner_pid=self._owner_pid)
        self._owner_pid = None
        self._orphaned = True
        if self._root is not None:
            self.send_message(self._root, _Stop())
        else:
            self._stop_admin()

    def _stop_admin(self) -> None:
        """Nobody will shut this ActorSystem down: take the admin and its helpers down."""
        admin = os.getppid()
        log.error("admin_stopped", admin_pid=admin)
        kill_process_tree(admin, spare=os.getpid())

    def _shutdown_tree(self, sender: Address, env: codec.Envelope) -> None:
        if self._root is None:
            self.reply(sender, env, Ok())
            return
        self._shutdown_waiters.append((sender, env))
        if len(self._shutdown_waiters) == 1:
            self.send_message(self._root, _Stop())

    def on_exit_request(self) -> None:
        """The ActorSystem is shutting down: its fault directory goes too."""
        log.debug("guardian_stopping", exit_reason=self._exit_reason)
        if self._fault_dir is not None:
            shutil.rmtree(self._fault_dir, ignore_errors=True)

    def on_dead_letter(self, to: Address, message: object) -> None:
        """A message could not be delivered: log it, and unblock a Runtime waiting on it.

        A Runtime's request to an actor that has exited is answered ``_Gone`` on the actor's
        behalf (to every Runtime client; the others skip it by correlation id), so the caller
        resolves the path again instead of waiting out its timeout.
        """
        kinds: list[str] = []
        dead = message
        if isinstance(dead, bytes):
            try:
                meta, envelopes = codec.decode_frame(dead, max_size=self.max_message_size)
            except CodecError:
                meta, envelopes = None, []
                kinds.append("<undecodable>")
            for env in envelopes:
                kinds.append(env.message.kind if isinstance(env, codec.Envelope) else "<bad>")
                if FrameMeta.from_wire(meta).ask and isinstance(env, codec.Envelope):
                    for client in self._clients.values():
                        self.reply(client, env, _Gone(path=""))
        else:
            kinds.append(type(dead).__name__)
        log.warning("dead_letter", to=str(to), kinds=kinds)

    def _remember_client(self, sender: Address) -> None:
        key = str(sender)
        if key not in self._clients and len(self._clients) >= MAX_CLIENTS:
            self._clients.pop(next(iter(self._clients)))
        self._clients[key] = sender

    # --- The path registry ------------------------------------------------------------------

    def _register(self, msg: _Register, sender: Address, env: codec.Envelope) -> None:
        address = unpack_address(msg.address)
        self._registry[msg.path] = _Registration(address, msg.pid, msg.host)
        if self._faults:
            notice = _Faults(faults=list(self._faults), fault_dir=self._fault_directory())
            self.send_message(address, notice)
        self._book.register_actor(msg.address, msg.path, tuple(msg.roles))
        self._pending.discard(msg.path)
        self.reply(sender, env, _Ack())
        for watcher in self._watchers.get(msg.path, {}).values():
            self.send_message(watcher, _Resolved(path=msg.path, address=msg.address, pid=msg.pid))
        self._release_resolves(msg.path)

    def _unregister(
        self,
        path: str,
        address_ref: ActorRef,
        *,
        pending: bool,
        reason: str = "",
        marks: list[tuple[int, int, int]] | None = None,
        sends: list[tuple[str, int]] | None = None,
    ) -> None:
        current = self._registry.get(path)
        if current is not None and current.address == unpack_address(address_ref):
            del self._registry[path]
            self._forget_identity(address_ref, reason=reason, sends=sends or [])
            self._unregister_tree(path + "/")
            self._subscribers.pop(path, None)
        if pending:
            self._pending.add(path)
        else:
            self._pending.discard(path)
        detail = "restarting" if pending else "exited"
        for watcher in self._watchers.get(path, {}).values():
            self.send_message(
                watcher,
                _Resolved(path=path, address=None, detail=detail, reason=reason, marks=marks),
            )
        self._release_resolves(path)

    def _unregister_tree(self, prefix: str) -> None:
        for path in [p for p in self._registry if p.startswith(prefix)]:
            ref = self._ref(self._registry.pop(path).address)
            if ref is not None:
                self._forget_identity(ref)
            self._pending.discard(path)
            self._release_resolves(path)

    # --- Identities ---------------------------------------------------------------------------

    @staticmethod
    def _ref(address: Address) -> ActorRef | None:
        try:
            return pack_address(address)
        except ValueError as exc:
            log.warning("address_unidentifiable", address=str(address), error=str(exc))
            return None

    def _identify(self, msg: _Identify, sender: Address) -> None:
        self._identity_watchers.setdefault(msg.address, {})[str(sender)] = sender
        identity = self._book.identify(msg.address)
        if identity is None and msg.address in self._recently_gone:
            # It exited before the asker's question arrived: say so, as a watcher would hear.
            self._identity_watchers.get(msg.address, {}).pop(str(sender), None)
            reason, sends = self._recently_gone[msg.address]
            self.send_message(
                sender,
                _Identified(
                    address=msg.address, identity=None, reason=reason, gone=True, sends=sends
                ),
            )
            return
        self.send_message(sender, _Identified(address=msg.address, identity=identity))

    def _forget_identity(
        self, ref: ActorRef, *, reason: str = "exited", sends: list[tuple[str, int]] | None = None
    ) -> None:
        sends = sends or []
        if self._book.unregister_actor(ref):
            self._recently_gone[ref] = (reason, sends)
            while len(self._recently_gone) > RECENTLY_GONE:
                del self._recently_gone[next(iter(self._recently_gone))]
        for watcher in self._identity_watchers.pop(ref, {}).values():
            self.send_message(
                watcher, _Identified(address=ref, identity=None, reason=reason, sends=sends)
            )

    def _challenge(self, sender: Address, env: codec.Envelope) -> None:
        ref = self._ref(sender)
        if ref is None:
            self.reply(sender, env, self._denied("this client's address cannot be identified"))
            return
        self.reply(sender, env, _Challenged(nonce=self._book.challenge(ref)))

    def _login(self, msg: _Login, sender: Address, env: codec.Envelope) -> None:
        ref = self._ref(sender)
        try:
            if ref is None:
                raise LoginRefused("this client's address cannot be identified")
            identity = self._book.login(ref, msg.principal, msg.proof)
        except LoginRefused as exc:
            log.warning(
                "login_refused", principal=msg.principal, client=str(sender), reason=str(exc)
            )
            self.reply(sender, env, self._denied(str(exc)))
            return
        log.info("principal_logged_in", principal=identity.name, roles=list(identity.roles))
        self.reply(sender, env, Ok())

    @staticmethod
    def _denied(text: str) -> ErrorReply:
        return ErrorReply(error=ErrorName.PERMISSION_DENIED, message=text)

    def _resolve(self, msg: _Resolve, sender: Address, env: codec.Envelope) -> None:
        if msg.watch:
            self._watchers.setdefault(msg.path, {})[str(sender)] = sender
        answer = self._resolution(msg)
        if answer is not None:
            self.reply(sender, env, answer)
            return
        token = self._timer(msg.wait, "resolve")
        self._held_resolves.append(_Held(sender, env, token))

    def _resolution(self, msg: _Resolve, *, final: bool = False) -> _Resolved | None:
        """Answer a resolution now, or return None to hold it until the path changes."""
        current = self._registry.get(msg.path)
        stale = unpack_address(msg.stale) if msg.stale is not None else None
        if current is not None and current.address != stale:
            return _Resolved(path=msg.path, address=pack_address(current.address), pid=current.pid)
        waiting = msg.path in self._pending or (current is not None and current.address == stale)
        if waiting and msg.wait > 0 and not final:
            return None
        detail = "restarting" if msg.path in self._pending else "no such actor"
        if self._root is None:
            detail = f"the root has exited ({self._exit_reason})"
        return _Resolved(path=msg.path, address=None, detail=detail)

    def _release_resolves(self, path: str) -> None:
        still: list[_Held] = []
        for held in self._held_resolves:
            msg = held.env.message
            assert isinstance(msg, _Resolve)  # noqa: S101
            answer = self._resolution(msg, final=held.expired) if msg.path == path else None
            if answer is None:
                still.append(held)
            else:
                self.cancel_timer(self._timer_ids.pop(held.token, 0))
                self.reply(held.requester, held.env, answer)
        self._held_resolves = still

    # --- The event log -----------------------------------------------------------------------

    def _report(self, msg: _Report) -> None:
        stream = self._streams.setdefault(msg.incarnation, _Stream())
        stream.early[msg.n] = msg
        self._waiting_streams.add(msg.incarnation)
        self._drain_reports()
        self._release_events(force=False)

    def _drain_reports(self) -> None:
        """Append every report whose predecessors (its own stream's, and the child events it
        was caused by: ``after``) are in; a report blocked too long is appended anyway."""
        progress = True
        while progress:
            progress = False
            for incarnation in list(self._waiting_streams):
                stream = self._streams[incarnation]
                while stream.next_n in stream.early:
                    report = stream.early[stream.next_n]
                    key = (incarnation, report.n)
                    if not self._after_met(report.after) and key not in self._overdue:
                        if key not in self._blocked:
                            self._blocked.add(key)
                            self.set_timer(REPORT_DEPENDENCY_TIMEOUT, ("overdue", key))
                        break
                    del stream.early[stream.next_n]
                    stream.next_n += 1
                    self._overdue.discard(key)
                    self._blocked.discard(key)
                    progress = True
                    self._append(
                        SupervisionEvent(
                            seq=len(self._events) + 1,
                            time=report.time,
                            supervisor=report.supervisor,
                            child_id=report.child_id,
                            event=report.event,
                            reason=report.reason,
                            host=report.host,
                        )
                    )
                if not stream.early:
                    self._waiting_streams.discard(incarnation)

    def _after_met(self, after: dict[str, int]) -> bool:
        return all(self._streams.get(i, _Stream()).next_n > n for i, n in after.items())

    # --- Injected faults (protocols.faults) ----------------------------------------------------

    def _inject_fault(self, msg: InjectFault, sender: Address, env: codec.Envelope) -> None:
        """Give the fault its id; an actor fault picks its targets among the registered
        actors now. A kill now or a pause goes back to the runtime, which signals the
        processes itself; any other fault becomes active and is sent to every actor."""
        self._fault_ids += 1
        fault = msg.spec.model_copy(update={"id": f"fault-{self._fault_ids}"})
        if isinstance(fault, ActorFault):
            fault = resolve_pick(fault, self._registry)
            if not fault.paths:
                self.reply(
                    sender,
                    env,
                    ErrorReply(
                        error=ErrorName.ACTOR_NOT_FOUND,
                        message=f"no live actor matches target {fault.target!r}",
                    ),
                )
                return
            if fault.signalled:
                log.info("fault_picked", fault_id=fault.id, fault=fault.fault, paths=fault.paths)
                self.reply(sender, env, fault)
                return
        self._faults.append((fault, time.time()))
        log.info("fault_active", fault_id=fault.id, fault=fault.fault, target=fault.target)
        self._broadcast_faults((sender, env, fault))

    def _fault_directory(self) -> str:
        """This runtime's fault directory (created on first use): heal marks, and the
        injections of processes that may be killed before they report them."""
        if self._fault_dir is None:
            root = Path(self._state_dir) / "faults"
            self._fault_dir = root / f"{os.getpid()}-{os.urandom(4).hex()}"
            try:
                self._fault_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("fault_dir_unusable", path=str(self._fault_dir), error=str(exc))
        return str(self._fault_dir)

    def _mark_healed(self, ids: list[str]) -> None:
        """Mark ``ids`` healed where a blocked worker (a hang, a held stop) looks for it: it
        cannot read the new fault set while it blocks."""
        if self._fault_dir is None:
            return
        for fault_id in ids:
            try:
                (self._fault_dir / f"healed-{fault_id}").touch()
            except OSError as exc:
                log.warning("fault_heal_unmarked", fault_id=fault_id, error=str(exc))

    def _durable_journal(self) -> list[FaultInjected]:
        """The injections workers wrote down before a kill (or a held stop)."""
        found: list[FaultInjected] = []
        if self._fault_dir is None:
            return found
        for path in sorted(self._fault_dir.glob("journal-*.jsonl")):
            try:
                lines = path.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    found.append(FaultInjected.model_validate_json(line))
                except ValueError:
                    log.warning("fault_journal_line_unreadable", path=str(path))
        return found

    def _broadcast_faults(self, answer: tuple[Address, codec.Envelope, Message]) -> None:
        """Tell every actor of the tree which message faults are active (workers apply them);
        answer the caller once each has acknowledged (so a fault is in force everywhere when
        ``inject`` returns), or after ``FAULT_ACK_TIMEOUT`` at the latest."""
        notice = _Faults(faults=list(self._faults), fault_dir=self._fault_directory())
        ids = {
            self.send_message(registration.address, notice)
            for registration in self._registry.values()
        }
        token = next(_fault_tokens)
        self._fault_waits[token] = (ids, answer)
        self.set_timer(FAULT_ACK_TIMEOUT, ("faults", token))
        self._fault_acked(None)

    def _fault_acked(self, correlation: int | None) -> None:
        for token, (ids, (asker, request, reply)) in list(self._fault_waits.items()):
            ids.discard(correlation)
            if not ids:
                del self._fault_waits[token]
                self.reply(asker, request, reply)

    def _fault_wait_expired(self, token: int) -> None:
        waiting = self._fault_waits.pop(token, None)
        if waiting is not None:
            ids, (asker, request, reply) = waiting
            log.warning("fault_notice_unacknowledged", actors=len(ids))
            self.reply(asker, request, reply)

    # --- Hosts (the host keeper of actors.cluster watches them) ---------------------------------

    def _start_cluster(self, msg: _Boot) -> None:
        """The leader's own host, and on multiprocTCPBase the host keeper that watches the
        hosts joining this ActorSystem's convention (``understudy join``)."""
        cluster = msg.cluster
        self._hosts[cluster.name] = HostInfo(
            name=cluster.name,
            address=msg.admin,
            status="up",
            capabilities=dict(cluster.capabilities),
            last_seen=time.time(),
            leader=True,
        )
        if not isinstance(self.self_address.addressDetails, str):  # a TCP system
            self._keeper = self.spawn_by_name(HOST_KEEPER)
            self.send_message(
                self._keeper,
                _KeeperStart(cluster=cluster, guardian=pack_address(self.self_address)),
            )

    def _host_table(self) -> _HostTable:
        return _HostTable(
            hosts={
                name: ("leaving" if name in self._leaving else h.status, dict(h.capabilities))
                for name, h in self._hosts.items()
            }
        )

    def _host_changed(self, msg: _HostChanged) -> None:
        if msg.status == "leaving":
            # Still up (it answers), but its children are moved or stopped: no new placement.
            self._leaving.add(msg.name)
            log.info("host_leaving", host=msg.name)
            if self._root is not None:
                self.send_message(self._root, self._host_table())
            return
        if msg.status == "down":
            self._leaving.discard(msg.name)
        before = self._hosts.get(msg.name)
        self._hosts[msg.name] = HostInfo(
            name=msg.name,
            address=msg.address,
            status=msg.status,
            capabilities=dict(msg.capabilities),
            last_seen=msg.last_seen,
        )
        if before is not None and before.status == msg.status:
            return
        event: EventName = (
            "host_up"
            if msg.status == "up"
            else "host_down"
            if msg.status == "down"
            else "host_suspect"
        )
        log.info(event, host=msg.name, address=msg.address, reason=msg.reason or None)
        self._append(
            SupervisionEvent(
                seq=len(self._events) + 1,
                time=time.time(),
                supervisor="cluster",
                child_id=msg.name,
                event=event,
                reason=msg.reason or None,
                host=msg.name,
            )
        )
        self._release_events(force=False)
        if self._root is not None and msg.status != "suspect":
            self.send_message(self._root, self._host_table())

    def _host_list(self) -> Hosts:
        counts: dict[str, int] = {}
        for registration in self._registry.values():
            if registration.host is not None:
                counts[registration.host] = counts.get(registration.host, 0) + 1
        return Hosts(
            hosts=[
                host.model_copy(update={"children": counts.get(name, 0)})
                for name, host in sorted(self._hosts.items())
            ]
        )

    def _append(self, event: SupervisionEvent) -> None:
        self._events.append(event)
        for subscriber in self._subscribers.values():
            self.send_message(subscriber, event)

    def _ready(self, msg: GetEvents) -> bool:
        """Return True once the barrier is met and, if asked, a wanted event exists."""
        if not all(self._streams.get(i, _Stream()).next_n > n for i, n in msg.barrier.items()):
            return False
        if msg.wait_event is None:
            return True
        return any(msg.wanted(e) for e in self._events[msg.since :])

    def _get_events(self, msg: GetEvents, sender: Address, env: codec.Envelope) -> None:
        if self._ready(msg):
            self._send_events(sender, env)
            return
        token = self._timer(msg.barrier_timeout, "events")
        self._held_events.append(_Held(sender, env, token))

    def _send_events(self, requester: Address, env: codec.Envelope) -> None:
        msg = env.message
        assert isinstance(msg, GetEvents)  # noqa: S101
        self.reply(
            requester, env, Events(events=self._events[msg.since :], exit_reason=self._exit_reason)
        )

    def _release_events(self, *, force: bool, token: int | None = None) -> None:
        still: list[_Held] = []
        for held in self._held_events:
            msg = held.env.message
            assert isinstance(msg, GetEvents)  # noqa: S101
            if (force and held.token == token) or self._ready(msg):
                self.cancel_timer(self._timer_ids.pop(held.token, 0))
                self._send_events(held.requester, held.env)
            else:
                still.append(held)
        self._held_events = still

    # --- Timers ----------------------------------------------------------------------------

    def _timer(self, seconds: float, what: str) -> int:
        self._tokens += 1
        self._timer_ids[self._tokens] = self.set_timer(seconds, (what, self._tokens))
        return self._tokens

    def on_wakeup(self, payload: Any) -> None:
        """A held request reached its deadline: answer it with what is known now."""
        if not isinstance(payload, tuple):
            return
        what, token = payload
        if what == "owner":
            self._check_owner()
            return
        if what == "faults":
            self._fault_wait_expired(token)
            return
        if what == "overdue":
            log.warning("event_order_timeout", report=list(token))
            self._overdue.add(token)
            self._drain_reports()
            self._release_events(force=False)
            return
        if what == "events":
            self._release_events(force=True, token=token)
            return
        for held in self._held_resolves:
            if held.token == token:
                held.expired = True
                msg = held.env.message
                assert isinstance(msg, _Resolve)  # noqa: S101
                self._release_resolves(msg.path)
                return
