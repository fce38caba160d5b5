"""Supervisor: starts, watches and restarts children with Erlang/OTP's semantics, on Thespian.

Vocabulary (OTP's ``supervisor`` manual)
    strategy    one_for_one | one_for_all | rest_for_one | simple_one_for_one
    restart     permanent (always) | transient (only after an abnormal exit) | temporary (never)
    intensity   more than ``intensity`` restarts within ``period`` seconds: stop every child in
                reverse start order and exit with reason "shutdown" (the parent sees a child exit)
    shutdown    seconds to wait for an orderly stop before killing | brutal_kill | infinity

Children start in spec order and stop in reverse order. Like OTP's gen_server, the supervisor
does one thing at a time: while an operation runs (booting, a restart, a child API call, a
shutdown) it waits only for the replies that operation needs, and every other message waits
in ``_inbox`` until the operation ends. Operations are generators that yield an ``_Await``
describing what they wait for; ``_pump`` feeds them, so each reads top to bottom like
``supervisor.erl``.

A child process ends in one way: it reports ``_Exiting(reason)`` (or ``_StartFailed``), the
supervisor sends ``ActorExitRequest``, and Thespian's ``ChildActorExited`` confirms the process
is gone. A ``ChildActorExited`` with no report first means the process was killed ("killed").
(The report and the exit request stay two steps: between them the exiting worker answers
asks ``_Gone``, so the Runtime asks its replacement instead of losing the ask.)
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, assert_never

import structlog

from actors.core.fault_points import StartFaults
from actors.core.ledger import from_tally
from actors.core.link_marks import take_marks, take_sends, take_tally
from actors.core.loading import load_class, load_decider
from actors.core.restart import (
    Directive,
    affected_children,
    auto_shutdown_due,
    backoff_delay,
    decide_restart,
    prune,
    record_child_restart,
    record_restart,
    reset_on_success,
)
from actors.core.seam import Address, FrameMeta, SeamActor, pack_address, unpack_address
from actors.core.workarounds import (
    EXIT_GRACE,
    die_with_creator,
    die_with_parent,
    kill_process,
    presigned,
)
from actors.core.worker import HOST_CAPABILITY, Worker, WorkerActor, current_host
from actors.logs import ensure_safe_logging
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import (
    _Ack,
    _Adopt,
    _Exiting,
    _Faults,
    _Gone,
    _HostTable,
    _Init,
    _Register,
    _Report,
    _RetryRestart,
    _Started,
    _StartFailed,
    _Stop,
    _Succeeded,
    _Unregister,
)
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.faults import FaultJournal
from protocols.ledger import GetLedger
from protocols.supervision import (
    KILLED,
    NOCONNECTION,
    SHUTDOWN,
    ChildCounts,
    ChildInfo,
    Children,
    CountChildren,
    DeleteChild,
    EventName,
    RestartChild,
    StartChild,
    TerminateChild,
    WhichChildren,
    error_reason,
)
from protocols.topology import ChildSpec, SupervisorSpec

__all__ = [
    "RETRY_RESTART_DELAY",
    "SUPERVISOR_REQUESTS",
    "Op",
    "SupervisorActor",
    "SupervisorRequest",
]

log = structlog.get_logger("understudy.supervisor")

SupervisorRequest = (
    _Init
    | _Stop
    | _RetryRestart
    | WhichChildren
    | CountChildren
    | StartChild
    | TerminateChild
    | RestartChild
    | DeleteChild
)
"""What a supervisor is asked to do: its parent's lifecycle commands and the child API."""
SUPERVISOR_REQUESTS = (
    _Init,
    _Stop,
    _RetryRestart,
    WhichChildren,
    CountChildren,
    StartChild,
    TerminateChild,
    RestartChild,
    DeleteChild,
)

_timer_tokens = itertools.count(1)


@dataclass
class _Child:
    spec: ChildSpec | SupervisorSpec
    dynamic: bool = False
    status: str = "stopped"  # running | restarting | stopped
    address: Address | None = None
    pid: int | None = None
    restarts: int = 0
    restart_times: tuple[float, ...] = ()
    limit_times: tuple[float, ...] = ()
    """Its restarts counted against its own ``restart_limit`` (since the last reset)."""
    host: str | None = None
    last_host: str | None = None
    """The host it last ran on (kept after it exited, for its events)."""
    parked: str | None = None
    """Why it waits (``restarting``) for a host its placement allows, if it does."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def type(self) -> str:
        return "supervisor" if isinstance(self.spec, SupervisorSpec) else "worker"


@dataclass
class _Ev:
    """One input to the supervisor: a decoded message or a Thespian system event."""

    kind: str  # started | start_failed | exiting | gone | timer | reply | request
    address: Address | None = None
    payload: Any = None
    env: codec.Envelope | None = None
    sender: Address | None = None


@dataclass
class _Await:
    """What an operation waits for: events from some children, a timer, or a reply."""

    addresses: list[Address] = field(default_factory=list)
    kinds: frozenset[str] = frozenset()
    timers: frozenset[int] = frozenset()
    correlation: int | None = None

    def matches(self, ev: _Ev) -> bool:
        if ev.kind == "timer":
            return ev.payload in self.timers
        if ev.kind == "reply":
            return self.correlation is not None and ev.payload == self.correlation
        return ev.kind in self.kinds and ev.address in self.addresses


Op = Generator[_Await, _Ev, Any]

#: Seconds before a failed restart is tried again (one attempt per delivery round on
#: simpleSystemBase; OTP retries at once, asynchronously).
RETRY_RESTART_DELAY = 0.005

_CHILD_EVENTS = frozenset({"started", "start_failed", "exiting", "gone"})


@presigned
class SupervisorActor(SeamActor):
    """One supervisor of the tree; its parent is another supervisor or the guardian."""

    def __init__(self) -> None:
        super().__init__()
        die_with_creator()
        self._spec: SupervisorSpec | None = None
        self._path = "?"
        self._parent: Address | None = None
        self._guardian: Address | None = None
        self._fault_injection = True
        self._start_faults = StartFaults()
        self._children: list[_Child] = []
        self._history: tuple[float, ...] = ()
        self._dynamic_ids = itertools.count(1)
        self._incarnation = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._events_sent = 0
        self._after: dict[str, int] = {}
        self._op: Op | None = None
        self._awaiting: _Await | None = None
        self._inbox: deque[_Ev] = deque()
        self._pumping = False
        self._exiting = False
        self._clock: Callable[[], float] = time.monotonic
        self._state_dir = ".understudy"
        self._secret_file = ""
        self._spare: Address | None = None
        self._spare_adopted = False
        self._delayed: dict[int, tuple[str, bool]] = {}
        self._spares = False
        self._hosts: dict[str, tuple[str, dict[str, str]]] = {}
        self._spread_next = 0
        self._held: list[Message] | None = None

    def describe(self) -> str:
        """Return the supervisor's path for logs."""
        return self._path

    # --- Inputs: everything becomes an _Ev and goes through _pump -----------------------------

    def on_message(self, env: codec.Envelope, sender: Address, meta: FrameMeta) -> None:
        """Turn a decoded message into an input event."""
        msg = env.message
        if isinstance(msg, _Started | _StartFailed | _Exiting) and msg.incarnation:
            self._after[msg.incarnation] = max(self._after.get(msg.incarnation, 0), msg.events)
        if isinstance(msg, _Started):
            self._pump(_Ev("started", sender, (msg.pid, msg.host)))
        elif isinstance(msg, _HostTable):
            self._pump(_Ev("hosts", payload=msg))
        elif isinstance(msg, _Faults):  # start faults are the supervisor's to apply
            self._start_faults.set(msg.faults)
            self.reply(sender, env, _Ack())
        elif isinstance(msg, _StartFailed):
            self._pump(_Ev("start_failed", sender, (msg.reason, msg.offender)))
        elif isinstance(msg, _Exiting):
            self._pump(_Ev("exiting", sender, msg.reason))
        elif isinstance(msg, _Succeeded):
            self._child_succeeded(sender)
        elif isinstance(msg, GetLedger):
            self.reply(sender, env, self.ledger.snapshot(self._path))
        elif isinstance(msg, _Ack) or (env.correlation_id is not None and isinstance(msg, Ok)):
            self._pump(_Ev("reply", sender, env.correlation_id))
        elif isinstance(msg, ErrorReply):
            log.warning(
                "error_reply_received", supervisor=self._path, error=msg.error, detail=msg.message
            )
        elif isinstance(msg, _Gone):
            log.debug("gone_reply_ignored", supervisor=self._path, path=msg.path)
        else:
            self._pump(_Ev("request", payload=msg, env=env, sender=sender))

    def on_child_exited(self, address: Address) -> None:
        """A child's process is gone."""
        self._pump(_Ev("gone", address))

    def on_wakeup(self, payload: Any) -> None:
        """A stop timer or a delayed restart fired."""
        if isinstance(payload, tuple) and payload and payload[0] == "supervisor_timer":
            delayed = self._delayed.pop(payload[1], None)
            if delayed is not None:
                child_id, count = delayed
                self.send_message(self.self_address, _RetryRestart(child_id=child_id, count=count))
                return
            self._pump(_Ev("timer", payload=payload[1]))

    def on_internal_error(self, exc: Exception) -> None:
        """A defect in the supervisor: stop the tree below and exit, never limp on."""
        super().on_internal_error(exc)
        if not self._exiting:
            for child in reversed(self._children):
                if child.address is not None:
                    self._kill(child)
            self._exit(error_reason(exc))

    def _pump(self, ev: _Ev) -> None:
        self._inbox.append(ev)
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                nxt = self._next_event()
                if nxt is None:
                    return
                if self._op is not None:
                    self._step(nxt)
                else:
                    self._handle(nxt)
        finally:
            self._pumping = False
            self._release_held()

    def _next_event(self) -> _Ev | None:
        if self._op is None:
            return self._inbox.popleft() if self._inbox else None
        awaiting = self._awaiting
        assert awaiting is not None  # noqa: S101 - an op always waits for something
        for index, ev in enumerate(self._inbox):
            if awaiting.matches(ev):
                del self._inbox[index]
                return ev
        return None

    def _run(self, op: Op) -> None:
        self._op = op
        self._step(None)

    def _step(self, ev: _Ev | None) -> None:
        assert self._op is not None  # noqa: S101
        try:
            self._awaiting = self._op.send(ev)  # type: ignore[arg-type]  # None primes it
        except StopIteration:
            self._op = None
            self._awaiting = None

    # --- Top level: one input at a time when no operation runs ---------------------------

    def _handle(self, ev: _Ev) -> None:
        if ev.kind == "request":
            self._request(ev)
            return
        if ev.kind == "hosts":
            self._run(self._on_hosts(ev.payload))
            return
        child = self._by_address(ev.address) if ev.address is not None else None
        if child is None:
            log.debug("stale_event_ignored", supervisor=self._path, kind=ev.kind)
            return
        if ev.kind == "exiting":
            # Wait for the process to be gone before telling anyone: acknowledgements it sent
            # on its way out reach their senders before the path's change does.
            self.stop_actor(child.address)
            self._run(self._child_exited(child, ev.payload, await_gone=True))
        elif ev.kind == "gone":
            self._run(self._child_exited(child, KILLED, await_gone=False))
        else:
            log.debug("stale_event_ignored", supervisor=self._path, kind=ev.kind)

    def _request(self, ev: _Ev) -> None:
        env, sender = ev.env, ev.sender
        assert env is not None  # noqa: S101 - requests carry their envelope
        msg = env.message
        if not isinstance(msg, SUPERVISOR_REQUESTS):
            log.warning("unexpected_message", supervisor=self._path, kind=msg.kind)
            self._answer(
                sender,
                env,
                ErrorReply(
                    error=ErrorName.NOT_SUPPORTED,
                    message=f"a supervisor does not handle {msg.kind!r} messages",
                ),
            )
            return
        if self._exiting and not isinstance(msg, _Init):
            if isinstance(msg, _Stop):
                log.debug("stop_while_exiting_ignored", supervisor=self._path)
            else:
                self.reply(sender, env, _Gone(path=self._path))
            return
        self._dispatch(msg, sender, env)

    def _dispatch(self, msg: SupervisorRequest, sender: Address, env: codec.Envelope) -> None:
        match msg:
            case _Init():
                self._run(self._boot(msg, sender))
            case _Stop():
                self._run(self._shutdown(msg.reason, event=None))
            case _RetryRestart():
                child = self._by_id(msg.child_id)
                if child is not None and child.status == "restarting":
                    self._run(self._retry_restart(child, count=msg.count))
            case WhichChildren():
                children = Children(children=[self._info(c) for c in self._children])
                self._answer(sender, env, children)
            case CountChildren():
                self._answer(sender, env, self._counts())
            case StartChild():
                self._run(self._api_start_child(msg, sender, env))
            case TerminateChild():
                self._run(self._api_terminate_child(msg.child_id, sender, env))
            case RestartChild():
                self._run(self._api_restart_child(msg.child_id, sender, env))
            case DeleteChild():
                self._api_delete_child(msg.child_id, sender, env)
            case _:
                assert_never(msg)

    # --- Boot -------------------------------------------------------------------------------

    def _boot(self, msg: _Init, parent: Address) -> Op:
        spec = msg.spec
        assert isinstance(spec, SupervisorSpec)  # noqa: S101 - parents send our own spec
        self._spec, self._path, self._parent = spec, msg.path, parent
        self._guardian = unpack_address(msg.guardian)
        self.max_message_size = msg.max_message_size
        self.resend_after, self.resend_max = msg.resend_after, msg.resend_max
        self._fault_injection = msg.fault_injection
        self._state_dir = msg.state_dir
        self._secret_file = msg.secret_file
        self._hosts = dict(msg.hosts)
        if msg.parent_pid != os.getpid():
            die_with_parent(msg.parent_pid)
            ensure_safe_logging()
            # One process per actor: creating a process is most of a restart's time, so keep
            # one worker host ready (when this supervisor has workers to restart).
            self._spares = spec.template is not None or any(
                isinstance(c, ChildSpec) for c in spec.children
            )
            self._preload(spec)
        started: list[_Child] = []
        for child_spec in spec.children:
            child = _Child(child_spec)
            self._children.append(child)
            ok, reason, offender = yield from self._start(
                child, booting=True, announce="child_started"
            )
            if not ok:
                self._emit("start_failed", child.id, reason)
                for done in reversed(started):
                    stop_reason = yield from self._stop(done)
                    self._emit("child_terminated", done.id, stop_reason)
                self._exiting = True
                self._drop_spare()
                self.send_message(
                    parent,
                    _StartFailed(
                        reason=reason,
                        offender=offender,
                        incarnation=self._incarnation,
                        events=self._events_sent,
                    ),
                )
                return
            if child.parked is not None:
                continue  # waits, restarting, for a host its placement allows
            started.append(child)
        if self._spare is not None and not self._spare_adopted:
            self._adopt_spare()  # the host left over from boot waits, warm, for a restart
        self.send_message(
            parent,
            _Started(
                pid=os.getpid(),
                incarnation=self._incarnation,
                events=self._events_sent,
                host=current_host(),
            ),
        )

    # --- Starting and stopping one child ----------------------------------------------------

    def _start(
        self, child: _Child, *, booting: bool = False, announce: EventName | None = None
    ) -> Generator[_Await, _Ev, tuple[bool, str, str]]:
        """Start ``child``; return (ok, reason, offender path). Once it is up, ``announce``
        is reported in the frame that registers it (the guardian records the registration,
        then the event).

        At boot the next worker host is forked while this child starts (children still start
        one after another: the fork, not the child's ``on_start``, runs beside it); on a
        restart it is forked once the child is registered, off the restart's path."""
        path = self._child_path(child)
        placed = self._place(child)
        if child.parked is not None:
            return True, "", path  # parked: it waits, restarting, for a host (see _place)
        if placed is not None:
            address = self.spawn_on(WorkerActor, {HOST_CAPABILITY: placed})
        elif child.type == "worker" and self._spare is not None:
            address, self._spare = self._spare, None
        else:
            actor_class = SupervisorActor if child.type == "supervisor" else WorkerActor
            address = self.spawn(actor_class)
        child.address = address
        delay, failure = 0.0, None
        assert self._guardian is not None  # noqa: S101 - set at boot
        if child.type == "worker" and self._fault_injection:
            faulted = self._start_faults.decide(path, time.time())
            delay, failure = faulted.delay, faulted.failure
            if faulted.hits:
                log.warning("fault_injected", child=path, delay=delay, failure=failure)
                journal = FaultJournal(injected=[hit.entry(path) for hit in faulted.hits])
                self.send_message(self._guardian, journal)
        self.send_message(
            address,
            _Init(
                path=path,
                spec=child.spec,
                guardian=pack_address(self._guardian),
                parent_pid=os.getpid(),
                max_message_size=self.max_message_size,
                resend_after=self.resend_after,
                resend_max=self.resend_max,
                state_dir=self._state_dir,
                secret_file=self._secret_file,
                hosts=self._hosts,
                parent_host=current_host(),
                fault_injection=self._fault_injection,
                start_delay=delay,
                start_failure=failure,
            ),
        )
        self._release_held()
        if booting:
            self._keep_spare(adopt=False)  # its _Init follows at once: no warm-up needed
        ev = yield _Await([address], _CHILD_EVENTS)
        if ev.kind == "started":
            (child.pid, child.host), child.status = ev.payload, "running"
            register: list[Message] = [
                _Register(
                    path=path,
                    address=pack_address(address),
                    pid=child.pid,
                    roles=list(getattr(child.spec, "roles", [])),
                    host=child.host,
                )
            ]
            if announce is not None:
                register.append(self._report(announce, child.id))
            ack = self.send_messages(self._guardian, register)[0]
            yield _Await(correlation=ack)
            self._keep_spare()
            return True, "", path
        if ev.kind == "start_failed":
            reason, offender = ev.payload
        elif ev.kind == "exiting":
            reason, offender = ev.payload, path
        else:
            reason, offender = KILLED, path
        if ev.kind != "gone":
            self.stop_actor(address)
            yield _Await([address], frozenset({"gone"}))
        child.address, child.pid, child.status = None, None, "stopped"
        return False, reason, offender or path

    # --- Hosts: placement and remote exits (the table comes from the guardian) -----------------

    def _place(self, child: _Child) -> str | None:
        """Where ``child`` starts: None here, else a host name. When its placement allows no
        host that is up, it is parked (``child.parked`` says why): ``restarting`` until the
        host table changes."""
        spec = child.spec
        placement = spec.placement if isinstance(spec, ChildSpec) else None
        here = current_host()
        if placement is None:
            child.parked = None
            return None
        candidates = sorted(
            name
            for name, (status, caps) in self._hosts.items()
            if status in ("up", "suspect") and placement.allows(name, caps)
        )
        if not candidates:
            child.parked = f"placement: no host up with {placement.describe()}"
            child.status = "restarting"
            log.warning("child_parked", supervisor=self._path, child=child.id, reason=child.parked)
            return None
        child.parked = None
        assert isinstance(spec, ChildSpec)  # noqa: S101 - placement is a ChildSpec field
        if spec.spread == "round_robin":
            chosen = candidates[self._spread_next % len(candidates)]
            self._spread_next += 1
        elif spec.spread == "least_loaded":
            load = dict.fromkeys(candidates, 0)
            for other in self._children:
                if other.address is not None and other.host in load:
                    load[other.host] += 1
            chosen = min(candidates, key=lambda name: (load[name], name))
        else:
            chosen = here if here in candidates else candidates[0]
        return None if chosen == here else chosen

    def _on_hosts(self, table: _HostTable) -> Op:
        """A new host table: children on a host now down exit ``noconnection`` (one exit
        each, in start order); parked children try again; child supervisors hear it too."""
        self._hosts = dict(table.hosts)
        for child in self._children:
            if child.type == "supervisor" and child.address is not None:
                self.send_message(child.address, table)
        down = {name for name, (status, _caps) in self._hosts.items() if status == "down"}
        leaving = {name for name, (status, _caps) in self._hosts.items() if status == "leaving"}
        for child in list(self._children):
            if self._exiting:
                return
            if child.address is not None and child.host in leaving and child in self._children:
                yield from self._move(child)
        for child in list(self._children):
            if self._exiting:
                return
            if child.address is not None and child.host in down and child in self._children:
                log.warning(
                    "child_lost_with_host", supervisor=self._path, child=child.id, host=child.host
                )
                yield from self._child_exited(child, NOCONNECTION, await_gone=False)
        for child in list(self._children):
            if self._exiting:
                return
            if child.parked is not None and child.address is None:
                ok, reason, _offender = yield from self._start(child, announce="child_restarted")
                if not ok:
                    self._emit("start_failed", child.id, reason)
                elif child.parked is None:
                    child.restarts += 1

    def _move(self, child: _Child) -> Op:
        """Its host is leaving: stop the child in order (its shutdown time), then start it
        again where its placement allows (or park it). A move is not a crash: it does not
        count toward the restart intensity."""
        log.info("child_moving", supervisor=self._path, child=child.id, host=child.host)
        stop_reason = yield from self._stop(child, pending=True)
        self._emit("child_terminated", child.id, stop_reason)
        if child.spec.restart == "temporary":
            self._children.remove(child)
            return
        ok, reason, _offender = yield from self._start(child, announce="child_started")
        if not ok:
            self._emit("start_failed", child.id, reason)
            child.status = "restarting"
            self._delayed[self._start_timer(RETRY_RESTART_DELAY)] = (child.id, False)

    @staticmethod
    def _preload(spec: SupervisorSpec) -> None:
        """Import the workers' modules here, once: every host this supervisor forks inherits
        them, so a (re)start does not pay for the import (~10 ms for a module of models).

        A class that does not load is left for the child's start to report.
        """
        templates = [spec.template] if spec.template is not None else []
        for child in [*spec.children, *templates]:
            if isinstance(child, ChildSpec):
                try:
                    load_class(child.start, Worker)
                except Exception:  # noqa: BLE001, S112 - the start reports it, with its path
                    continue

    def _keep_spare(self, *, adopt: bool = True) -> None:
        """Create the ready worker host if this supervisor keeps one and has none; ``adopt``
        warms it up (its connection back to this supervisor opened by an exchange)."""
        if self._spares and self._spare is None and not self._exiting:
            self._spare = self.spawn(WorkerActor)
            self._spare_adopted = False
            if adopt:
                self._adopt_spare()

    def _adopt_spare(self) -> None:
        assert self._spare is not None  # noqa: S101 - called with a spare
        self._spare_adopted = True
        self.send_message(self._spare, _Adopt(parent_pid=os.getpid()))

    def _drop_spare(self) -> None:
        if self._spare is not None:
            self.stop_actor(self._spare)
            self._spare = None

    def _stop(
        self, child: _Child, reason: str = SHUTDOWN, *, pending: bool = False
    ) -> Generator[_Await, _Ev, str]:
        """Stop a running child in order (or kill it); return its exit reason.

        ``pending`` tells the guardian that the child will be started again (group restart).
        """
        results = yield from self._stop_many([child], reason, pending=pending)
        return results[0]

    def _stop_many(
        self, children: list[_Child], reason: str = SHUTDOWN, *, pending: bool = False
    ) -> Generator[_Await, _Ev, list[str]]:
        """Stop children in parallel, each within its shutdown time; return their exit reasons."""
        live = {id(c): c for c in children if c.address is not None}
        outcome: dict[int, str] = {id(c): SHUTDOWN for c in children if c.address is None}
        reported: dict[int, str] = {}
        timers: dict[int, _Child] = {}
        killed: set[int] = set()
        for child in live.values():
            shutdown = child.spec.shutdown
            if shutdown == "brutal_kill":
                killed.add(id(child))
                self._kill(child)
                continue
            self.send_message(child.address, _Stop(reason=reason))
            if shutdown != "infinity":
                timers[self._start_timer(float(shutdown))] = child
        waiting = list(live.values())
        while waiting:
            ev = yield _Await(
                [c.address for c in waiting],
                frozenset({"exiting", "gone", "start_failed"}),
                frozenset(timers),
            )
            if ev.kind == "timer":
                child = timers.pop(ev.payload)
                if child in waiting:
                    if id(child) not in reported:
                        killed.add(id(child))
                    self._kill(child)
                continue
            child = next(c for c in waiting if c.address == ev.address)
            if ev.kind == "exiting":
                reported[id(child)] = ev.payload
                self.stop_actor(child.address)
                # Thespian may never let it go (workarounds.EXIT_GRACE): bound the wait.
                timers[self._start_timer(EXIT_GRACE)] = child
            elif ev.kind == "start_failed":
                reported[id(child)] = ev.payload[0]
                self.stop_actor(child.address)
            else:
                waiting.remove(child)
                outcome[id(child)] = (
                    KILLED if id(child) in killed else reported.get(id(child), KILLED)
                )
                self._forget(
                    child,
                    pending=pending and child.spec.restart != "temporary",
                    reason=outcome[id(child)],
                )
        return [outcome[id(c)] for c in children]

    def _to_guardian(self, message: Message) -> None:
        """Send ``message`` to the guardian now, or after the held ones (``_held``)."""
        if self._held is not None:
            self._held.append(message)
        elif self._guardian is not None:
            self.send_message(self._guardian, message)

    def _release_held(self) -> None:
        """Send what waits for the guardian, in order, in one frame."""
        held, self._held = self._held, None
        if held and self._guardian is not None:
            self.send_messages(self._guardian, held)

    def _kill(self, child: _Child) -> None:
        if child.pid is not None and child.pid != os.getpid():
            kill_process(child.pid)
        elif child.address is not None:
            self.stop_actor(child.address)

    def _start_timer(self, seconds: float) -> int:
        token = next(_timer_tokens)
        self.set_timer(seconds, ("supervisor_timer", token))
        return token

    def _forget(self, child: _Child, *, pending: bool, reason: str) -> None:
        """Record that the child's process is gone (with ``reason``) and tell the guardian."""
        if child.address is not None and self._guardian is not None:
            key = str(child.address)
            taken = take_marks(key=key, state_dir=self._state_dir, pid=child.pid)
            sends = take_sends(key=key, state_dir=self._state_dir, pid=child.pid)
            tally = (
                None
                if child.pid == os.getpid()
                else take_tally(state_dir=self._state_dir, pid=child.pid)
            )
            marks = None
            if taken is not None and taken[1]:
                marks = [(nonce, seq, n) for nonce, (seq, n) in taken[0].items()]
            self._to_guardian(
                _Unregister(
                    path=self._child_path(child),
                    address=pack_address(child.address),
                    pending=pending,
                    reason=reason,
                    marks=marks,
                    sends=sorted(sends.items()),
                    ledger=None if tally is None else from_tally(self._child_path(child), tally),
                ),
            )
        child.last_host = child.host or child.last_host
        child.address, child.pid, child.status, child.host = None, None, "stopped", None

    # --- A child exited by itself -------------------------------------------------------------

    def _child_exited(self, child: _Child, reason: str, *, await_gone: bool) -> Op:
        spec = self._spec
        assert spec is not None  # noqa: S101
        if await_gone:
            ev = yield _Await([child.address], frozenset({"gone"}))
            del ev
        # What the guardian hears of this exit waits until the replacement's _Init is sent (or
        # this input is handled): the restart's path does not wait for that bookkeeping.
        self._held = []
        directive, delay = self._directive(child, reason)
        verdict = self._count_restart(child) if directive == "restart" else "restart"
        restart = directive == "restart" and verdict != "stop"
        self._forget(child, pending=restart, reason=reason)
        self._emit("child_exited", child.id, reason)
        if directive == "escalate":
            log.warning("child_escalated", supervisor=self._path, offender=child.id, reason=reason)
            yield from self._shutdown(reason, event=None, offender=child.id)
            return
        if verdict != "restart":
            self._emit(
                "intensity_exceeded" if verdict == "intensity" else "restart_limit_exceeded",
                child.id,
                SHUTDOWN if verdict == "intensity" else reason,
            )
            if verdict != "stop":
                yield from self._give_up(child.id)
                return
        if not restart:
            if child.spec.restart == "temporary" or (
                child.dynamic and spec.strategy == ("simple_one_for_one")
            ):
                self._children.remove(child)
            alive = sum(1 for c in self._children if c.spec.significant and c.address is not None)
            if auto_shutdown_due(
                spec.auto_shutdown,
                exited_significant=child.spec.significant,
                significant_still_alive=alive,
            ):
                yield from self._shutdown(SHUTDOWN, event="auto_shutdown", offender=child.id)
            return
        delay = max(delay, self._backoff(child))
        if delay > 0:
            child.status = "restarting"
            self._delayed[self._start_timer(delay)] = (child.id, False)
            return
        yield from self._restart_group(child)

    def _directive(self, child: _Child, reason: str) -> tuple[Directive, float]:
        decider = None
        if isinstance(child.spec, ChildSpec) and child.spec.decider is not None:
            decider = load_decider(child.spec.decider)
        try:
            return decide_restart(child.spec.restart, reason, decider)
        except Exception as exc:  # noqa: BLE001 - a broken decider falls back to OTP's rule
            log.error(
                "decider_failed", supervisor=self._path, offender=child.id, error=error_reason(exc)
            )
            return decide_restart(child.spec.restart, reason)

    def _backoff(self, child: _Child) -> float:
        spec = self._spec
        assert spec is not None  # noqa: S101
        now = self._clock()
        child.restart_times = prune(child.restart_times, now, period=spec.period)
        backoff = child.spec.backoff if isinstance(child.spec, ChildSpec) else None
        delay = 0.0
        if backoff is not None:
            delay = backoff_delay(len(child.restart_times), base=backoff.base, cap=backoff.cap)
        child.restart_times = (*child.restart_times, now)
        return delay

    def _count_restart(self, child: _Child) -> str:
        """Count a restart of ``child``: against its own ``restart_limit`` when it has one
        (``restart``, ``stop`` or ``escalate``), else against the supervisor's intensity
        (``restart`` or ``intensity``). Emits nothing: the caller reports the verdict."""
        spec = self._spec
        assert spec is not None  # noqa: S101
        limit = child.spec.restart_limit if isinstance(child.spec, ChildSpec) else None
        if limit is not None:
            verdict, child.limit_times = record_child_restart(
                child.limit_times, self._clock(), limit=limit
            )
            return verdict
        allowed, self._history = record_restart(
            self._history, self._clock(), intensity=spec.intensity, period=spec.period
        )
        return "restart" if allowed else "intensity"

    def _child_succeeded(self, address: Address) -> None:
        """A child reported a success: reset its restart limit (and backoff) if it asks."""
        child = self._by_address(address)
        limit = (
            child.spec.restart_limit
            if child is not None and isinstance(child.spec, ChildSpec)
            else None
        )
        if child is None or limit is None:
            return
        child.limit_times = reset_on_success(child.limit_times, limit)
        if not child.limit_times:
            child.restart_times = ()
        log.debug("child_succeeded", supervisor=self._path, child=child.id)

    def _give_up(self, offender: str) -> Op:
        yield from self._shutdown(SHUTDOWN, event=None, offender=offender)

    def _restart_group(self, failed: _Child) -> Op:
        """Restart ``failed`` and, per the strategy, its siblings; retry later on start failure."""
        spec = self._spec
        assert spec is not None  # noqa: S101
        order = [c.id for c in self._children]
        group_ids = affected_children(spec.strategy, order, failed.id)
        group = [c for c in self._children if c.id in group_ids]
        for sibling in reversed(group):
            if sibling is not failed and sibling.address is not None:
                stop_reason = yield from self._stop(sibling, pending=True)
                self._emit("child_terminated", sibling.id, stop_reason)
        for child in group:
            if child is not failed and child.spec.restart == "temporary":
                self._children.remove(child)  # OTP: temporary children are never restarted
        group = [c for c in group if c in self._children]
        for index, child in enumerate(group):
            ok, reason, _offender = yield from self._start(child, announce="child_restarted")
            if not ok:
                self._emit("start_failed", child.id, reason)
                for waiting in group[index:]:
                    waiting.status = "restarting"
                # OTP's try_again_restart, on a timer rather than a message to ourselves: on
                # simpleSystemBase a self-message is handled within the same synchronous
                # delivery, so a restart that keeps failing would never let the caller return.
                self._delayed[self._start_timer(RETRY_RESTART_DELAY)] = (child.id, True)
                return
            if child.parked is not None:
                continue  # no host for it now: it starts when the host table changes
            child.restarts += 1

    def _retry_restart(self, child: _Child, *, count: bool = True) -> Op:
        spec = self._spec
        assert spec is not None  # noqa: S101
        verdict = self._count_restart(child) if count else "restart"
        if verdict == "intensity":
            self._emit("intensity_exceeded", child.id, SHUTDOWN)
        elif verdict != "restart":
            self._emit("restart_limit_exceeded", child.id, "start_failed")
        if verdict == "stop":
            child.status = "stopped"
            if child.spec.restart == "temporary" or (
                child.dynamic and spec.strategy == "simple_one_for_one"
            ):
                self._children.remove(child)
            return
        if verdict != "restart":
            yield from self._give_up(child.id)
            return
        yield from self._restart_group(child)

    # --- Shutdown -------------------------------------------------------------------------------

    def _shutdown(self, reason: str, *, event: EventName | None, offender: str | None = None) -> Op:
        """Stop every child in reverse start order, then exit with ``reason``."""
        spec = self._spec
        assert spec is not None  # noqa: S101
        if event is not None:
            self._emit(event, offender, reason)
        running = [c for c in self._children if c.address is not None]
        if spec.strategy == "simple_one_for_one":
            reasons = yield from self._stop_many(running)
            for child, stop_reason in zip(running, reasons, strict=True):
                self._emit("child_terminated", child.id, stop_reason)
        else:
            for child in reversed(running):
                stop_reason = yield from self._stop(child)
                self._emit("child_terminated", child.id, stop_reason)
        for child in self._children:
            child.status = "stopped"
        self._emit("supervisor_shutdown", None, reason)
        self._exit(reason)

    def _exit(self, reason: str) -> None:
        self._exiting = True
        self._drop_spare()
        if self._guardian is not None:
            self.send_message(self._guardian, self.ledger.snapshot(self._path))
        if self._parent is not None:
            self.send_message(
                self._parent,
                _Exiting(reason=reason, incarnation=self._incarnation, events=self._events_sent),
            )
        else:
            self.stop_actor(self.self_address)

    # --- The child API ---------------------------------------------------------------------------

    def _answer(self, to: Address, env: codec.Envelope, message: Any) -> None:
        self.reply(to, env, message, meta=FrameMeta(events=(self._incarnation, self._events_sent)))

    def _refuse(self, to: Address, env: codec.Envelope, error: str, message: str) -> None:
        self._answer(to, env, ErrorReply(error=error, message=message))

    def _api_start_child(self, msg: StartChild, sender: Address, env: codec.Envelope) -> Op:
        spec = self._spec
        assert spec is not None  # noqa: S101
        if spec.strategy == "simple_one_for_one":
            if msg.spec is not None:
                self._refuse(
                    sender,
                    env,
                    ErrorName.NOT_SUPPORTED,
                    "start_child on a simple_one_for_one supervisor takes args, not a spec",
                )
                return
            template = spec.template
            assert template is not None  # noqa: S101 - validated by the topology
            child_id = f"{template.id}-{next(self._dynamic_ids)}"
            child_spec: ChildSpec | SupervisorSpec = template.model_copy(
                update={"id": child_id, "args": {**template.args, **(msg.args or {})}}
            )
        else:
            if msg.spec is None:
                self._refuse(
                    sender,
                    env,
                    ErrorName.NOT_SUPPORTED,
                    f"start_child on a {spec.strategy} supervisor takes a child spec",
                )
                return
            child_spec = msg.spec
            existing = self._by_id(child_spec.id)
            if existing is not None:
                if existing.address is not None:
                    self._refuse(
                        sender,
                        env,
                        ErrorName.ALREADY_STARTED,
                        f"child {child_spec.id!r} is already started",
                    )
                else:
                    self._refuse(
                        sender,
                        env,
                        ErrorName.ALREADY_PRESENT,
                        f"child {child_spec.id!r} is already present",
                    )
                return
            if child_spec.significant and spec.auto_shutdown == "never":
                self._refuse(
                    sender,
                    env,
                    ErrorName.TOPOLOGY_ERROR,
                    f"child {child_spec.id!r} is significant but auto_shutdown is never",
                )
                return
        child = _Child(child_spec, dynamic=True)
        self._children.append(child)
        ok = yield from self._start_and_answer(child, sender, env)
        if not ok:
            self._children.remove(child)

    def _api_terminate_child(self, child_id: str, sender: Address, env: codec.Envelope) -> Op:
        spec = self._spec
        assert spec is not None  # noqa: S101
        child = self._by_id(child_id)
        if child is None:
            self._refuse(sender, env, ErrorName.CHILD_NOT_FOUND, f"no child {child_id!r}")
            return
        if child.address is not None:
            reason = yield from self._stop(child)
            self._emit("child_terminated", child.id, reason)
        child.status = "stopped"
        if spec.strategy == "simple_one_for_one" or child.spec.restart == "temporary":
            self._children.remove(child)
        self._answer(sender, env, Ok())

    def _api_restart_child(self, child_id: str, sender: Address, env: codec.Envelope) -> Op:
        refusal = self._check_stopped(child_id, "restart_child")
        if refusal is not None:
            self._refuse(sender, env, *refusal)
            return
        child = self._by_id(child_id)
        assert child is not None  # noqa: S101 - checked above
        yield from self._start_and_answer(child, sender, env)

    def _start_and_answer(
        self, child: _Child, sender: Address, env: codec.Envelope
    ) -> Generator[_Await, _Ev, bool]:
        """Start ``child`` for a child API call and answer ChildInfo or StartFailed."""
        ok, reason, offender = yield from self._start(child, announce="child_started")
        if not ok:
            self._emit("start_failed", child.id, reason)
            self._answer(
                sender,
                env,
                ErrorReply(error=ErrorName.START_FAILED, message=offender, reason=reason),
            )
            return False
        self._answer(sender, env, self._info(child))
        return True

    def _api_delete_child(self, child_id: str, sender: Address, env: codec.Envelope) -> None:
        refusal = self._check_stopped(child_id, "delete_child")
        if refusal is not None:
            self._refuse(sender, env, *refusal)
            return
        child = self._by_id(child_id)
        assert child is not None  # noqa: S101 - checked above
        self._children.remove(child)
        self._emit("child_deleted", child_id)
        self._answer(sender, env, Ok())

    def _check_stopped(self, child_id: str, call: str) -> tuple[str, str] | None:
        spec = self._spec
        assert spec is not None  # noqa: S101
        if spec.strategy == "simple_one_for_one":
            return "NotSupported", f"{call} is not supported on a simple_one_for_one supervisor"
        child = self._by_id(child_id)
        if child is None:
            return "ChildNotFound", f"no child {child_id!r}"
        if child.status == "restarting":
            return "ChildRestarting", f"child {child_id!r} is restarting"
        if child.address is not None:
            return "ChildRunning", f"child {child_id!r} is running"
        return None

    # --- Helpers ---------------------------------------------------------------------------

    def _child_path(self, child: _Child) -> str:
        return f"{self._path}/{child.id}"

    def _by_id(self, child_id: str) -> _Child | None:
        # Newest first: the child being started is the last one (no quadratic start-up).
        return next((c for c in reversed(self._children) if c.id == child_id), None)

    def _by_address(self, address: Address) -> _Child | None:
        return next((c for c in reversed(self._children) if c.address == address), None)

    def _info(self, child: _Child) -> ChildInfo:
        status = "running" if child.address is not None else child.status
        return ChildInfo(
            id=child.id,
            status=status,
            type=child.type,
            restart=child.spec.restart,
            restarts=child.restarts,
            pid=child.pid,
            host=child.host,
            reason=child.parked,
        )

    def _counts(self) -> ChildCounts:
        spec = self._spec
        assert spec is not None  # noqa: S101
        supervisors = sum(1 for c in self._children if c.type == "supervisor")
        return ChildCounts(
            # OTP: a simple_one_for_one supervisor has one spec, its template
            specs=1 if spec.strategy == "simple_one_for_one" else len(self._children),
            active=sum(1 for c in self._children if c.address is not None),
            supervisors=supervisors,
            workers=len(self._children) - supervisors,
        )

    def _event_host(self, child_id: str | None) -> str | None:
        """The host an event is about: its child's (last) host, else this supervisor's."""
        child = self._by_id(child_id) if child_id is not None else None
        if child is not None and (child.host or child.last_host):
            return child.host or child.last_host
        return current_host()

    def _emit(self, event: EventName, child_id: str | None, reason: str | None = None) -> None:
        """Log one supervision fact with OTP's report keys and report it to the guardian."""
        report = self._report(event, child_id, reason)
        if self._guardian is not None:
            self._to_guardian(report)

    def _report(self, event: EventName, child_id: str | None, reason: str | None = None) -> _Report:
        """Log one supervision fact and return its report for the guardian (numbered: the
        caller sends it, and sends the reports in the order they were made)."""
        self._events_sent += 1
        context = {
            "child_exited": "child_terminated",
            "start_failed": "start_error",
            "intensity_exceeded": "shutdown",
            "restart_limit_exceeded": "restart_limit",
            "auto_shutdown": "auto_shutdown",
        }.get(event)
        warn = ("start_failed", "intensity_exceeded", "restart_limit_exceeded")
        level = "warning" if event in warn else "info"
        getattr(log, level)(
            event, supervisor=self._path, offender=child_id, reason=reason, error_context=context
        )
        report = _Report(
            incarnation=self._incarnation,
            n=self._events_sent,
            time=time.time(),
            supervisor=self._path,
            child_id=child_id,
            event=event,
            reason=reason,
            after=self._after,
            host=self._event_host(child_id),
        )
        if self._guardian is not None:
            self._after = {}  # sent with this report (without a guardian, nothing is sent)
        return report
