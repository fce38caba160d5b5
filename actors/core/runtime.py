"""Runtime: start a supervision tree on Thespian and talk to it from ordinary Python.

    with Runtime.start("topology.yaml") as rt:
        reply = rt.ask("root/echo", Ping(), timeout=5.0)

``Runtime.start`` returns once the whole tree has started (or raises ``StartFailed`` having
stopped everything). Every call is synchronous and thread-safe; replies are matched to requests
by correlation id, never by arrival order. Paths are resolved through the guardian and cached;
when a cached actor has exited (its process is gone, or it answers that it is exiting) the
path is resolved again, waiting for a pending restart within the call's timeout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from actors.core.guardian import GUARDIAN_NAME, Guardian
from actors.core.identities import login_proof
from actors.core.keyring import (
    SECRET_FILE_ENV,
    Keyring,
    SecretError,
    create_key_file,
    principal_key_path,
    read_key_file,
    secret_path,
)
from actors.core.ledger import report
from actors.core.loading import load_class, load_decider
from actors.core.runtime_runs import DEFAULT_ORCHESTRATOR, RunEvents, RunSubscription
from actors.core.seam import (
    Address,
    encode_external,
    open_system,
    pack_address,
    spawn_global,
    unpack_address,
)
from actors.core.workarounds import (
    DeliveryFailed,
    ProcessWatch,
    TargetGone,
    ask_correlated,
)
from actors.core.worker import HOST_ENV, Worker, host_capabilities
from actors.errors import (
    ActorExited,
    ActorNotFound,
    AskTimeout,
    NotSupported,
    RuntimeStopped,
    StartFailed,
    error_from_reply,
)
from protocols import codec
from protocols._base import Message
from protocols._lifecycle import (
    _Boot,
    _Challenge,
    _Challenged,
    _Gone,
    _Login,
    _Resolve,
    _Resolved,
    _ShutdownTree,
)
from protocols.cluster import GetHosts, HostInfo, Hosts
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.errors import TopologyError
from protocols.faults import (
    ActorFault,
    FaultInjected,
    FaultJournal,
    FaultsApplied,
    GetFaultJournal,
    HealFaults,
    InjectFault,
    MessageFault,
    fault_from_dict,
)
from protocols.ledger import GetLedger, LedgerReport, LedgerSnapshot, RetiredLedgers
from protocols.orchestrator import PhaseEvent
from protocols.supervision import (
    KILLED,
    ChildCounts,
    ChildInfo,
    Children,
    CountChildren,
    DeleteChild,
    Events,
    GetEvents,
    RestartChild,
    StartChild,
    SupervisionEvent,
    TerminateChild,
    WhichChildren,
)
from protocols.topology import (
    DEFAULT_STATE_DIR,
    ChildSpec,
    ModelPrice,
    SupervisorSpec,
    SystemConfig,
    Topology,
)
from protocols.topology_loader import load_topology

log = structlog.get_logger("understudy.runtime")

if TYPE_CHECKING:
    from actors.core.runtime_metrics import MetricsServer, RuntimeCollector

M = TypeVar("M", bound=Message)

DEFAULT_ASK_TIMEOUT = 5.0
DEFAULT_CALL_TIMEOUT = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing is bound to right now, below the kernel's
    ephemeral range: a port from that range (what binding port 0 gives) can be taken, before
    the caller binds it, as the local port of some process's outgoing connection, and an
    ActorSystem admin then fails to start on it (seen once in CI)."""
    low = _ephemeral_low()
    for port in random.sample(range(_FIRST_PORT, low), min(200, low - _FIRST_PORT)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: any port
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


_FIRST_PORT = 10_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 where unknown)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return max(low, _FIRST_PORT + 1)


def deployment_keyring(config: SystemConfig, *, create: bool) -> Keyring:
    """Return the deployment secret of ``config`` (see ``actors.core.keyring``).

    With no secret configured (``system.cluster.secret_file``, ``UNDERSTUDY_SECRET_FILE``),
    ``<state_dir>/secret`` is used, created (mode 0600) when ``create`` and missing.

    Raises:
        TopologyError: ``listen`` is not loopback and no secret is configured.
        SecretError: the secret file is missing, unreadable, not 0600 or invalid.
    """
    configured = config.cluster.secret_file or os.environ.get(SECRET_FILE_ENV)
    if not configured and not ipaddress.IPv4Address(config.listen).is_loopback:
        msg = (
            f"listen {config.listen} is reachable from other hosts: configure the cluster "
            "secret they share (system.cluster.secret_file or UNDERSTUDY_SECRET_FILE) first"
        )
        raise TopologyError(msg, field="system.listen")
    path = secret_path(config.cluster.secret_file, config.state_dir)
    if not configured and create and create_key_file(path):
        log.info("secret_created", secret=str(path.resolve()))
    return Keyring(path.resolve())


def ensure_principal_keys(config: SystemConfig) -> None:
    """Create the key file (mode 0600) of every principal of ``config`` that has none."""
    for name in config.principals:
        path = principal_key_path(config.state_dir, name)
        if create_key_file(path):
            log.info("principal_key_created", principal=name, key_file=str(path.resolve()))


def check_workers(topology: Topology) -> None:
    """Check that every worker's ``start`` names an importable Worker subclass.

    Raises:
        TopologyError: naming the field of the first bad ``start``.
    """

    def walk(spec: SupervisorSpec, where: str) -> Iterator[tuple[str, ChildSpec]]:
        if spec.template is not None:
            yield f"{where}.template", spec.template
        for index, child in enumerate(spec.children):
            at = f"{where}.children[{index}]"
            if isinstance(child, SupervisorSpec):
                yield from walk(child, at)
            else:
                yield at, child

    for where, child in walk(topology.root, "root"):
        try:
            load_class(child.start, Worker)
        except Exception as exc:
            raise TopologyError(
                f"cannot use {child.start!r}: {exc}", field=f"{where}.start"
            ) from exc
        if child.decider is not None:
            try:
                load_decider(child.decider)
            except Exception as exc:
                raise TopologyError(
                    f"cannot use {child.decider!r}: {exc}", field=f"{where}.decider"
                ) from exc


class FaultHandle:
    """An injected fault: ``heal()`` ends it; as a context manager it heals on exit."""

    def __init__(self, control: FaultControl, fault: MessageFault | ActorFault) -> None:
        self.fault = fault
        self._control = control

    @property
    def id(self) -> str:
        """The id the runtime gave the fault (as the journal names it)."""
        return self.fault.id

    @property
    def paths(self) -> list[str]:
        """The actors an actor fault picked (empty for a message fault)."""
        return list(self.fault.paths) if isinstance(self.fault, ActorFault) else []

    def heal(self) -> None:
        """End this fault (the messages arriving from now on are not affected; a paused
        process is resumed, a hang ends)."""
        self._control.heal(self.fault.id)

    def __enter__(self) -> FaultHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()


class FaultControl:
    """``rt.faults``: message faults at the seam of every worker whose path matches, and
    actor faults (``protocols.faults``); a kill now and a pause are signals this runtime
    sends the picked processes itself."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._paused: dict[str, list[int]] = {}
        self._paused_lock = threading.Lock()

    def inject(
        self,
        spec: MessageFault | ActorFault | dict[str, Any],
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> FaultHandle:
        """Activate ``spec`` (a dict is an ActorFault when its ``fault`` is an actor kind);
        return its handle (heal it, or use it in a ``with``). An actor fault picks its
        targets now, among the live actors its ``target`` matches (``handle.paths``).

        Raises:
            ValidationError: ``spec`` is not a valid fault.
            NotSupported: the deployment has ``system.fault_injection: false``; or a kill now,
                a pause or an unbounded hang on a base without a process per actor.
            ActorNotFound: an actor fault's ``target`` matches no live actor.
        """
        fault = spec if isinstance(spec, MessageFault | ActorFault) else fault_from_dict(spec)
        if isinstance(fault, ActorFault):
            self._check_base(fault)
        started = time.monotonic()
        reply = self._runtime._guardian_call(InjectFault(spec=fault), timeout)
        assert isinstance(reply, MessageFault | ActorFault)  # noqa: S101 - the guardian's answer
        if isinstance(reply, ActorFault) and reply.signalled:
            self._signal(reply, started, timeout)
        return FaultHandle(self, reply)

    def _check_base(self, fault: ActorFault) -> None:
        base = self._runtime.base
        if base.startswith("multiproc"):
            return
        if fault.signalled:
            msg = f"a {fault.describe()} fault signals actor processes: it needs multiprocTCPBase"
            raise NotSupported(msg)
        if fault.fault == "hang" and fault.seconds is None:
            msg = (
                f"on {base} a hang blocks the whole system, so nothing could heal it: "
                "give it `seconds`"
            )
            raise NotSupported(msg)

    def _signal(self, fault: ActorFault, started: float, timeout: float) -> None:
        """SIGKILL (kill now) or SIGSTOP (pause, with a timer to resume) the picked actors'
        processes, and have the guardian journal each."""
        runtime = self._runtime
        sig = signal.SIGKILL if fault.fault == "kill" else signal.SIGSTOP
        entries: list[FaultInjected] = []
        seen = max((e.seq for e in runtime.events(timeout=timeout)), default=0)
        for n, path in enumerate(fault.paths):
            if n and sig == signal.SIGKILL:
                # Thespian defect: when two children die at the same instant their parent may
                # see only one ChildActorExited (the other is never restarted, and its stop
                # hangs). Each kill waits (bounded) for the previous one's exit to be seen.
                with contextlib.suppress(AskTimeout):
                    child_id = fault.paths[n - 1].rpartition("/")[2]
                    runtime.wait_event("child_exited", child_id=child_id, after=seen, timeout=5)
            pid = runtime._pid_of(path, timeout)
            if pid is None or pid == os.getpid():
                log.warning("fault_not_applied", fault_id=fault.id, target=path, why="no process")
                continue
            if sig == signal.SIGSTOP:
                with self._paused_lock:
                    self._paused.setdefault(fault.id, []).append(pid)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                log.warning("fault_not_applied", fault_id=fault.id, target=path, why="gone")
                continue
            log.warning(
                "fault_injected", fault=fault.fault, fault_id=fault.id, target=path, pid=pid
            )
            entries.append(
                FaultInjected(
                    fault_id=fault.id,
                    fault=fault.fault,
                    target=path,
                    message_kind="",
                    ordinal=0,
                    at=time.monotonic() - started,
                )
            )
        if sig == signal.SIGSTOP:
            timer = threading.Timer(fault.pause_seconds, self._resume, (fault.id,))
            timer.daemon = True
            timer.start()
        runtime._guardian_call(FaultsApplied(injected=entries), timeout)

    def _resume(self, fault_id: str | None = None) -> None:
        """SIGCONT the processes a pause stopped (``fault_id``'s, or every one)."""
        with self._paused_lock:
            ids = list(self._paused) if fault_id is None else [fault_id]
            pids = [pid for i in ids for pid in self._paused.pop(i, [])]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                log.info("fault_resumed", pid=pid, fault_id=fault_id)

    def heal(self, fault_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        """End the fault ``fault_id`` (a paused process is resumed at once)."""
        self._resume(fault_id)
        self._runtime._guardian_call(HealFaults(ids=[fault_id]), timeout)

    def heal_all(self, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        """End every active fault (every paused process is resumed at once)."""
        self._resume()
        self._runtime._guardian_call(HealFaults(), timeout)

    def journal(self, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> FaultJournal:
        """Every injection so far (fault, target path, message kind, ordinal, when: asked of
        every live worker, plus those of the incarnations that exited, those written down
        before a kill, and those the runtime applied) and the faults active now."""
        runtime = self._runtime
        injected: list[FaultInjected] = []
        for path in runtime._live_paths(timeout)[1:]:
            # Supervisors have no seam faults: they answer NotSupported.
            with contextlib.suppress(ActorNotFound, ActorExited, AskTimeout, NotSupported):
                reply = runtime.ask(path, GetFaultJournal(), timeout=timeout)
                if isinstance(reply, FaultJournal):
                    injected += reply.injected
        retired = runtime._guardian_call(GetFaultJournal(), timeout)
        assert isinstance(retired, FaultJournal)  # noqa: S101 - the guardian's answer
        injected += retired.injected
        injected.sort(key=lambda e: (e.fault_id, e.target, e.ordinal))
        return FaultJournal(injected=injected, active=retired.active)


class Runtime:
    """A running supervision tree (or a connection to one started elsewhere)."""

    def __init__(
        self,
        system: Any,
        guardian: Address,
        *,
        owns_system: bool,
        max_message_size: int = codec.DEFAULT_MAX_SIZE,
        admin_port: int | None = None,
        base: str = "multiprocTCPBase",
        secret_file: Path | None = None,
        listen: str = "127.0.0.1",
    ) -> None:
        self._system = system
        self.secret_file = secret_file
        """The deployment secret this runtime's frames are tagged with."""
        self.listen = listen
        """The address every socket of the deployment binds."""
        self._root_path = "root"
        self.principal = "system"
        """Who this runtime acts as: ``system`` (it started the tree) or a principal's name."""
        self._guardian = guardian
        self._owns_system = owns_system
        self._max_size = max_message_size
        self.admin_port = admin_port
        self.base = base
        self._lock = threading.RLock()
        self._owner = threading.get_ident()
        self._endpoints = threading.local()
        self._clones = contextlib.ExitStack()
        self._clones_lock = threading.Lock()
        self._closed = False
        self._addresses: dict[str, tuple[Address, int | None]] = {}
        self._pids = ProcessWatch()
        self._stale: dict[str, Address] = {}
        self._barrier: dict[str, int] = {}
        self._final_events: list[SupervisionEvent] | None = None
        self._prices: dict[str, ModelPrice] = {}
        self._collector: RuntimeCollector | None = None
        self._metrics_server: MetricsServer | None = None
        self._exit_reason: str | None = None
        self._fault_control: FaultControl | None = None

    # --- Starting and stopping ------------------------------------------------------------

    @classmethod
    def start(
        cls, topology: Topology | str | os.PathLike[str], *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Runtime:
        """Start an ActorSystem and the tree of ``topology`` (a model or a YAML path).

        Returns once every child has started.

        Raises:
            TopologyError: the topology is invalid (nothing was started).
            StartFailed: a child failed to start; everything started was stopped.
        """
        if not isinstance(topology, Topology):
            topology = load_topology(topology)
        check_workers(topology)
        config = topology.system
        keyring = deployment_keyring(config, create=True)
        ensure_principal_keys(config)
        capabilities: dict[str, Any] = {}
        port = None
        if config.base == "multiprocTCPBase":
            port = config.admin_port or free_port(config.listen)
            capabilities["Admin Port"] = port
            capabilities.update(host_capabilities(config.cluster.name, config.cluster.capabilities))
        # Inherited by the admin and every actor process it forks: they know their host.
        os.environ[HOST_ENV] = config.cluster.name
        system = open_system(
            config.base,
            capabilities,
            keyring=keyring,
            listen=config.listen,
            max_frame=config.max_message_size,
        )
        try:
            guardian = spawn_global(system, Guardian, GUARDIAN_NAME)
            runtime = cls(
                system,
                guardian,
                owns_system=True,
                max_message_size=config.max_message_size,
                admin_port=port,
                base=config.base,
                secret_file=keyring.path,
                listen=config.listen,
            )
            runtime._root_path = topology.root.id
            reply = runtime._request(
                guardian,
                "guardian",
                _Boot(
                    spec=topology.root,
                    max_message_size=config.max_message_size,
                    cluster=config.cluster,
                    admin=f"{config.listen}:{port}" if port else "in-process",
                    resend_after=config.links.resend_after,
                    resend_max=config.links.resend_max,
                    state_dir=str(Path(config.state_dir).resolve()),
                    secret_file=str(keyring.path),
                    owner_pid=os.getpid() if config.base == "multiprocTCPBase" else None,
                    principals={name: list(spec.roles) for name, spec in config.principals.items()},
                    fault_injection=config.fault_injection,
                ),
                timeout,
            )
        except BaseException:
            system.shutdown()
            raise
        if isinstance(reply, ErrorReply):
            system.shutdown()
            raise StartFailed(reply.message, reply.reason or "")
        runtime.prices = dict(config.metrics.prices)
        log.info("runtime_started", base=config.base, admin_port=port, root=topology.root.id)
        if config.metrics.port is not None:
            try:
                runtime.serve_metrics(config.metrics.port)
            except BaseException:
                runtime.shutdown()
                raise
        return runtime

    @classmethod
    def attach(
        cls,
        admin_port: int,
        *,
        secret_file: str | os.PathLike[str],
        listen: str = "127.0.0.1",
        max_message_size: int = codec.DEFAULT_MAX_SIZE,
        principal: str = "operator",
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        timeout: float = DEFAULT_ASK_TIMEOUT,
    ) -> Runtime:
        """Connect to a tree started by another process (e.g. ``understudy up``) as a principal.

        Args:
            admin_port: the tree's admin port (``runtime.json`` in its state directory).
            secret_file: the deployment secret the tree was started with.
            listen: the address the tree listens on (this process binds it too).
            max_message_size: the largest message sent or accepted.
            principal: the principal (``system.principals``) this client acts as; its key is
                ``<state_dir>/principals/<principal>.key``.
            state_dir: the tree's state directory.
            timeout: seconds to wait for the login.

        Raises:
            SecretError: the secret file or the principal's key file is missing, unreadable
                or not 0600.
            RequestRejected: the guardian refused the login (``error`` PermissionDenied).
        """
        try:
            principal_keys = read_key_file(principal_key_path(state_dir, principal))
        except SecretError as exc:
            msg = (
                f"cannot act as principal {principal!r}: {exc} (`understudy up` creates a key "
                "for each principal declared in system.principals)"
            )
            raise SecretError(msg) from exc
        keyring = Keyring(secret_file)
        system = open_system(
            "multiprocTCPBase",
            {"Admin Port": admin_port},
            transient=False,
            keyring=keyring,
            listen=listen,
            max_frame=max_message_size,
        )
        guardian = spawn_global(system, Guardian, GUARDIAN_NAME)
        runtime = cls(
            system,
            guardian,
            owns_system=False,
            admin_port=admin_port,
            max_message_size=max_message_size,
            secret_file=keyring.path,
            listen=listen,
        )
        runtime._login(principal, principal_keys[0], timeout)
        runtime.principal = principal
        return runtime

    def _login(self, principal: str, key: bytes, timeout: float) -> None:
        """Prove to the guardian that this client holds ``principal``'s key."""
        challenge = self._request(self._guardian, "guardian", _Challenge(), timeout)
        if isinstance(challenge, ErrorReply):
            raise error_from_reply(challenge, "guardian")
        assert isinstance(challenge, _Challenged)  # noqa: S101 - the guardian's answer
        proof = login_proof(key, principal, challenge.nonce)
        reply = self._request(
            self._guardian, "guardian", _Login(principal=principal, proof=proof), timeout
        )
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply, "guardian")
        log.info("runtime_logged_in", principal=principal)

    def shutdown(self, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        """Stop the tree in reverse start order and then the ActorSystem; idempotent. A process
        a pause stopped is resumed first (none stays stopped)."""
        if self._fault_control is not None:
            self._fault_control._resume()
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        with self._lock:
            if self._closed:
                return
            try:
                if self._owns_system:
                    self._request(self._guardian, "guardian", _ShutdownTree(), timeout)
                    self._final_events, self._exit_reason = self._fetch_events(timeout)
            except Exception as exc:  # noqa: BLE001 - the system must go down regardless
                log.warning("orderly_shutdown_failed", error=repr(exc))
            finally:
                self._closed = True
                self._close_endpoints()
                self._pids.close()
                if self._owns_system:
                    self._system.shutdown()
                log.info("runtime_stopped", exit_reason=self._exit_reason)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # --- Messages to actors -------------------------------------------------------------------

    def ask(self, path: str, message: Message, timeout: float = DEFAULT_ASK_TIMEOUT) -> Message:
        """Send ``message`` to the actor at ``path`` and return its reply.

        Raises:
            AskTimeout: no reply within ``timeout`` seconds.
            ActorNotFound: no actor lives at ``path``.
            ActorCrashed: the handler raised; the actor exited and will not see the message again.
        """
        if self._concurrent():
            self._check_open()
            reply = self._ask_path(path, message, timeout)
        else:
            with self._lock:
                self._check_open()
                reply = self._ask_path(path, message, timeout)
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply, path)
        return reply

    def _concurrent(self) -> bool:
        """Whether this call runs beside others: another thread than the one that made this
        runtime, on a base with a process per actor. Such a thread asks through an endpoint
        of its own (``_endpoint``), so asks from several threads are in flight together; on
        simpleSystemBase the actors run in the caller's thread, so calls take turns."""
        return self.base.startswith("multiproc") and threading.get_ident() != self._owner

    def _endpoint(self) -> Any:
        """The ActorSystem endpoint this thread sends and receives through: the runtime's
        own in the thread that made it, a private one (Thespian's ``private()`` clone, made
        on first use, closed at shutdown) in any other thread of a multiprocess base."""
        if not self._concurrent():
            return self._system
        endpoint = getattr(self._endpoints, "system", None)
        if endpoint is None:
            with self._clones_lock:
                self._check_open()
                endpoint = self._clones.enter_context(self._system.private())
            self._endpoints.system = endpoint
        return endpoint

    def _close_endpoints(self) -> None:
        """Close every thread's private endpoint (before the ActorSystem goes down)."""
        with self._clones_lock:
            try:
                self._clones.close()
            except Exception as exc:  # noqa: BLE001 - the system must go down regardless
                log.warning("endpoint_close_failed", error=repr(exc))

    def tell(self, path: str, message: Message) -> None:
        """Send ``message`` one-way to the actor at ``path``."""
        with self._lock:
            self._check_open()
            address = self._address(path, time.monotonic() + DEFAULT_ASK_TIMEOUT)
            self._system.tell(
                address,
                encode_external(
                    message, message_id=codec.new_message_id(), ask=False, max_size=self._max_size
                ),
            )

    # --- The child API ---------------------------------------------------------------------------

    def which_children(
        self, path: str, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> list[ChildInfo]:
        """List the children of the supervisor at ``path``, in start order."""
        return self._call(path, WhichChildren(), Children, timeout).children

    def count_children(self, path: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> ChildCounts:
        """Count the children of the supervisor at ``path`` (OTP's count_children)."""
        return self._call(path, CountChildren(), ChildCounts, timeout)

    def start_child(
        self,
        path: str,
        spec: ChildSpec | SupervisorSpec | dict[str, Any],
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> ChildInfo:
        """Start a child under ``path``: a spec, or extra args for a simple_one_for_one template.

        Raises:
            AlreadyStarted, AlreadyPresent: the id exists. StartFailed: the child did not start.
        """
        request = StartChild(args=spec) if isinstance(spec, dict) else StartChild(spec=spec)
        return self._call(path, request, ChildInfo, timeout)

    def terminate_child(
        self, path: str, child_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        """Stop a child (after its cleanup, or killed after its shutdown time)."""
        self._call(path, TerminateChild(child_id=_bare(path, child_id)), Ok, timeout)

    def restart_child(
        self, path: str, child_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> ChildInfo:
        """Start a terminated child again from its spec."""
        return self._call(path, RestartChild(child_id=_bare(path, child_id)), ChildInfo, timeout)

    def delete_child(
        self, path: str, child_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        """Remove a terminated child's spec."""
        self._call(path, DeleteChild(child_id=_bare(path, child_id)), Ok, timeout)

    # --- The message ledger ---------------------------------------------------------------------

    def ledger(self, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> LedgerReport:
        """The tree's message ledger (``protocols.ledger``): every live worker's counters plus
        those of the incarnations that exited. Call it once the system is quiet for
        ``balanced`` to mean "nothing lost"."""
        snapshots: list[LedgerSnapshot] = []
        for path in self._live_paths(timeout):
            with contextlib.suppress(ActorNotFound, ActorExited, AskTimeout):
                reply = self.ask(path, GetLedger(), timeout=timeout)
                if isinstance(reply, LedgerSnapshot):
                    snapshots.append(reply)
        with self._lock:
            self._check_open()
            retired = self._request(self._guardian, "guardian", GetLedger(), timeout)
        assert isinstance(retired, RetiredLedgers)  # noqa: S101 - the guardian's answer
        return report([*snapshots, *retired.snapshots], unreported=retired.unreported)

    def _live_paths(self, timeout: float) -> list[str]:
        """The root and every running actor below it."""
        live = [self._root_path]
        pending = [self._root_path]
        while pending:
            path = pending.pop()
            for child in self.which_children(path, timeout=timeout):
                if child.status != "running":
                    continue
                live.append(f"{path}/{child.id}")
                if child.type == "supervisor":
                    pending.append(f"{path}/{child.id}")
        return live

    @property
    def faults(self) -> FaultControl:
        """Inject and heal faults (``protocols.faults``)."""
        if self._fault_control is None:
            self._fault_control = FaultControl(self)
        return self._fault_control

    def _pid_of(self, path: str, timeout: float) -> int | None:
        """The process of the actor at ``path`` (None: it has none of its own)."""
        with self._lock:
            self._check_open()
            self._address(path, time.monotonic() + timeout)
            cached = self._addresses.get(path)
        return None if cached is None else cached[1]

    def _guardian_call(self, message: Message, timeout: float) -> Message:
        """A request to the guardian; an error it answers is raised."""
        with self._lock:
            self._check_open()
            reply = self._request(self._guardian, "guardian", message, timeout)
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply, "guardian")
        return reply

    def hosts(self, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> list[HostInfo]:
        """The hosts of the cluster (this one, the leader, first among equals by name), each
        with its status (``up`` / ``suspect`` / ``down``), capabilities and children."""
        with self._lock:
            self._check_open()
            reply = self._request(self._guardian, "guardian", GetHosts(), timeout)
        assert isinstance(reply, Hosts)  # noqa: S101 - the guardian's answer
        return reply.hosts

    # --- Events and the root's fate ----------------------------------------------------------

    def events(
        self, *, since: int = 0, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> list[SupervisionEvent]:
        """Return every supervision event so far after the first ``since``, in order
        (including those your calls caused)."""
        with self._lock:
            if self._closed:
                return list(self._final_events or [])[since:]
            events, reason = self._fetch_events(timeout, since=since)
            self._exit_reason = self._exit_reason or reason
            return events

    def wait_event(
        self,
        event: str,
        *,
        child_id: str | None = None,
        supervisor: str | None = None,
        after: int = 0,
        timeout: float = DEFAULT_ASK_TIMEOUT,
    ) -> SupervisionEvent:
        """Wait until an event named ``event`` (matching the filters, seq > ``after``) exists.

        Raises:
            AskTimeout: no such event within ``timeout`` seconds.
        """
        with self._lock:
            self._check_open()
            request = GetEvents(
                since=after,
                barrier=dict(self._barrier),
                wait_event=event,
                wait_child=child_id,
                wait_supervisor=supervisor,
                barrier_timeout=timeout,
            )
            reply = self._request(self._guardian, "guardian", request, timeout + 1.0)
            assert isinstance(reply, Events)  # noqa: S101 - the guardian's answer
            for found in reply.events:
                if _matches(found, event, child_id, supervisor):
                    return found
            raise AskTimeout(f"event {event}", timeout)

    # --- Metrics ------------------------------------------------------------------------------

    @property
    def prices(self) -> dict[str, ModelPrice]:
        """The price table (model -> USD per million tokens) the metrics estimate costs with;
        ``system.metrics.prices`` of the topology a started runtime came from."""
        return self._prices

    @prices.setter
    def prices(self, table: dict[str, ModelPrice]) -> None:
        self._prices = dict(table)
        if self._collector is not None:
            self._collector.prices = dict(table)

    def metrics_text(self) -> str:
        """The tree's Prometheus metrics now, in the text exposition format (the families are
        listed in ``actors.core.runtime_metrics`` and the README's "Metrics")."""
        from actors.core.runtime_metrics import render_metrics

        return render_metrics(self._metrics_collector())

    def serve_metrics(self, port: int = 0) -> MetricsServer:
        """Serve the metrics on ``http://127.0.0.1:<port>/metrics`` until ``close()`` on the
        returned server or this runtime's shutdown (port 0: a free one, see ``.port``).

        Raises:
            NotSupported: on simpleSystemBase (a scrape runs the actors in the HTTP server's
                thread there; call ``metrics_text`` from your own thread instead).
            OSError: the port is taken.
        """
        from actors.core.runtime_metrics import MetricsServer

        if self.base == "simpleSystemBase":
            msg = (
                "serve_metrics needs a multi-process base: on simpleSystemBase the actors run in "
                "the calling thread; call rt.metrics_text() instead"
            )
            raise NotSupported(msg)
        if self._metrics_server is not None:
            self._metrics_server.close()
        self._metrics_server = MetricsServer(self._metrics_collector(), port=port)
        return self._metrics_server

    def _metrics_collector(self) -> RuntimeCollector:
        """The runtime's own collector (its supervision cursor lives across scrapes)."""
        from actors.core.runtime_metrics import RuntimeCollector

        if self._collector is None:
            self._collector = RuntimeCollector(self, prices=self.prices)
        return self._collector

    # --- Following a run -------------------------------------------------------------------

    def run_events(
        self,
        run_id: str,
        *,
        orchestrator: str = DEFAULT_ORCHESTRATOR,
        since: int = 0,
        timeout: float | None = 300.0,
        poll: float = 1.0,
        max_events: int = 1000,
    ) -> RunEvents:
        """Iterate over a run's events (``PhaseEvent``), each as it happens, until its end.

        Phases start and end, model calls start and end (with tokens), tool calls start and
        end: see the README's "Following a run". The returned iterator's ``outcome`` is the
        run's ``RunOutcome`` once the iteration has ended.

        Args:
            run_id: the run (``RunAccepted.run_id``).
            orchestrator: the orchestrator's path.
            since: skip the run's first ``since`` events.
            timeout: the longest wait for the next event (None: no limit); then AskTimeout.
            poll: the longest one request is held by the orchestrator (calls made meanwhile
                in the same thread, or on simpleSystemBase, wait at most that long).
            max_events: the most events fetched (and held here) at once.
        """
        return RunEvents(
            self,
            run_id,
            orchestrator=orchestrator,
            since=since,
            timeout=timeout,
            poll=poll,
            max_events=max_events,
        )

    def subscribe_run(
        self,
        run_id: str,
        callback: Callable[[PhaseEvent], object],
        *,
        orchestrator: str = DEFAULT_ORCHESTRATOR,
        since: int = 0,
        timeout: float | None = 300.0,
        poll: float = 1.0,
    ) -> RunSubscription:
        """Call ``callback`` with each event of a run as it happens, on a thread of its own.

        The arguments are ``run_events``'s. ``wait()`` on the returned subscription returns
        the run's outcome; ``close()`` stops it.

        Raises:
            NotSupported: on simpleSystemBase, whose actors run in the thread that calls in
                (iterate ``run_events`` in your own thread there).
        """
        if self.base == "simpleSystemBase":
            msg = (
                "subscribe_run needs a multi-process base: on simpleSystemBase the actors run "
                "in the calling thread; iterate rt.run_events(...) instead"
            )
            raise NotSupported(msg)
        events = self.run_events(
            run_id, orchestrator=orchestrator, since=since, timeout=timeout, poll=poll
        )
        return RunSubscription(events, callback)

    @property
    def exit_reason(self) -> str | None:
        """None while the root runs; the root's exit reason once it has exited."""
        with self._lock:
            if self._exit_reason is not None or self._closed:
                return self._exit_reason
            _events, self._exit_reason = self._fetch_events(DEFAULT_CALL_TIMEOUT)
            return self._exit_reason

    # --- Internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = "the runtime has been shut down"
            raise RuntimeStopped(msg)

    def _fetch_events(
        self, timeout: float, *, since: int = 0
    ) -> tuple[list[SupervisionEvent], str | None]:
        reply = self._request(
            self._guardian,
            "guardian",
            GetEvents(since=since, barrier=dict(self._barrier)),
            timeout,
        )
        assert isinstance(reply, Events)  # noqa: S101 - the guardian's answer
        return reply.events, reply.exit_reason

    def _call(self, path: str, request: Message, expected: type[M], timeout: float) -> M:
        with self._lock:
            self._check_open()
            child_id = getattr(request, "child_id", None)
            if child_id is not None:
                self._forget_paths(f"{path}/{child_id}")
            reply = self._ask_path(path, request, timeout)
            if isinstance(reply, ErrorReply):
                raise error_from_reply(reply, path)
            if not isinstance(reply, expected):
                msg = f"{path} answered {reply.kind!r} to {request.kind!r}"
                raise ActorNotFound(path, msg)
            return reply

    def _ask_path(self, path: str, message: Message, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        address = self._address(path, deadline)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AskTimeout(path, timeout)
            cached = self._addresses.get(path)
            pid = cached[1] if cached is not None and cached[0] is address else None
            try:
                reply = self._request(address, path, message, remaining, pid=pid)
            except DeliveryFailed:
                reply = _Gone(path=path)
            except TargetGone:
                # It took the message and died before answering: fail now (never resend it).
                self._addresses.pop(path, None)
                self._stale[path] = address
                raise ActorExited(path, KILLED) from None
            if isinstance(reply, _Gone):
                self._addresses.pop(path, None)
                address = self._resolve(path, deadline, stale=address)
                continue
            if isinstance(reply, ErrorReply) and reply.error == ErrorName.ACTOR_CRASHED:
                # The actor is exiting: the next call waits for its replacement instead of
                # sending to an address that is about to die.
                self._addresses.pop(path, None)
                self._stale[path] = address
            return reply

    def _request(
        self,
        address: Address,
        path: str,
        message: Message,
        timeout: float,
        *,
        pid: int | None = None,
    ) -> Message:
        """One request/reply exchange; raises AskTimeout, DeliveryFailed or TargetGone (the
        process ``pid`` died before answering)."""
        mid = codec.new_message_id()
        data = encode_external(message, message_id=mid, ask=True, max_size=self._max_size)
        alive = None
        if pid is not None and pid != os.getpid():

            def alive() -> bool:
                return self._pids.alive(pid)

        result = ask_correlated(
            self._endpoint(), address, data, mid, timeout, max_size=self._max_size, alive=alive
        )
        if result is None:
            raise AskTimeout(path, round(timeout, 3))
        env, meta = result
        if meta.events is not None:
            incarnation, count = meta.events
            with self._clones_lock:
                self._barrier[incarnation] = max(self._barrier.get(incarnation, 0), count)
        return env.message

    def _forget_paths(self, path: str) -> None:
        """Drop cached addresses of ``path`` and below (the call will stop or replace them)."""
        for cached in [p for p in self._addresses if p == path or p.startswith(path + "/")]:
            self._stale[cached] = self._addresses.pop(cached)[0]

    def _address(self, path: str, deadline: float) -> Address:
        cached = self._addresses.get(path)
        if cached is not None:
            address, pid = cached
            if pid is None or pid == os.getpid() or self._pids.alive(pid):
                return address
            # The process is gone: do not pay Thespian's failed-delivery delay to learn it.
            self._addresses.pop(path, None)
            self._stale[path] = address
        return self._resolve(path, deadline, stale=self._stale.pop(path, None))

    def _resolve(self, path: str, deadline: float, *, stale: Address | None = None) -> Address:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AskTimeout(path, 0.0)
        request = _Resolve(
            path=path,
            stale=pack_address(stale) if stale is not None else None,
            wait=max(0.0, remaining - 0.05),
        )
        try:
            reply = self._request(self._guardian, "guardian", request, remaining)
        except DeliveryFailed as exc:
            msg = "the runtime's guardian is gone"
            raise RuntimeStopped(msg) from exc
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply, path)
        assert isinstance(reply, _Resolved)  # noqa: S101 - the guardian's answer
        if reply.address is None:
            raise ActorNotFound(path, reply.detail)
        address = unpack_address(reply.address)
        self._addresses[path] = (address, reply.pid)
        return address


def _bare(path: str, child_id: str) -> str:
    prefix = path.rstrip("/") + "/"
    return child_id[len(prefix) :] if child_id.startswith(prefix) else child_id


def _matches(
    event: SupervisionEvent, name: str, child_id: str | None, supervisor: str | None
) -> bool:
    return (
        event.event == name
        and (child_id is None or event.child_id == child_id)
        and (supervisor is None or event.supervisor == supervisor)
    )


@contextlib.contextmanager
def running(topology: Topology | str | os.PathLike[str]) -> Iterator[Runtime]:
    """Start a runtime for the duration of a ``with`` block."""
    runtime = Runtime.start(topology)
    try:
        yield runtime
    finally:
        runtime.shutdown()


__all__ = [
    "Runtime",
    "check_workers",
    "deployment_keyring",
    "ensure_principal_keys",
    "free_port",
    "running",
]
