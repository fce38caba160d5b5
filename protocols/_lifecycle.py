"""The supervision tree's private lifecycle protocol: what supervisors, workers, the guardian
and the Runtime tell each other to start, register, resolve, report and stop actors.

None of these messages is part of the public API; users see their effects through the child
API and ``SupervisionEvent`` (``protocols.supervision``).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols._base import Message
from protocols.faults import AnyFault
from protocols.identity import Identity
from protocols.ledger import LedgerSnapshot
from protocols.supervision import SHUTDOWN, EventName
from protocols.topology import AnyChildSpec, ClusterConfig

__all__ = [
    "ActorRef",
    "_Ack",
    "_Adopt",
    "_Boot",
    "_Challenge",
    "_Challenged",
    "_Exiting",
    "_Faults",
    "_Gone",
    "_Heartbeat",
    "_HeartbeatAck",
    "_HostChanged",
    "_HostLeaving",
    "_HostTable",
    "_Identified",
    "_Identify",
    "_Init",
    "_KeeperStart",
    "_Leave",
    "_Left",
    "_Login",
    "_Register",
    "_Report",
    "_Resolve",
    "_Resolved",
    "_RetryRestart",
    "_ShutdownTree",
    "_StartFailed",
    "_Started",
    "_Stop",
    "_Succeeded",
    "_Unregister",
]


class ActorRef(BaseModel):
    """An actor's address as data: ``{host, port}`` on multiprocTCPBase, ``{name}`` on
    simpleSystemBase. Never pickle: an address in a message field is validated like any other
    field (``actors.core.seam.pack_address`` / ``unpack_address`` convert)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str | None = Field(default=None, max_length=15)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=256)

    def key(self) -> str:
        """A short text naming this address (``host:port``, or the name)."""
        return f"{self.host}:{self.port}" if self.name is None else self.name

    @model_validator(mode="after")
    def _one_form(self) -> ActorRef:
        tcp = (self.host, self.port) != (None, None)
        if tcp == (self.name is not None) or (tcp and None in (self.host, self.port)):
            msg = "an address is either {host, port} (TCP) or {name} (simpleSystemBase)"
            raise ValueError(msg)
        if self.host is not None:
            try:
                ipaddress.IPv4Address(self.host)
            except ValueError:
                msg = f"host must be an IPv4 address, got {self.host!r}"
                raise ValueError(msg) from None
        return self


# --- Messages ---------------------------------------------------------


class _Init(Message):
    """Supervisor -> new child: become this child of the tree."""

    kind: Literal["_supervision.init"] = "_supervision.init"
    path: str
    spec: AnyChildSpec
    guardian: ActorRef
    parent_pid: int
    max_message_size: int
    resend_after: float = 0.5
    resend_max: float = 8.0
    state_dir: str = ".understudy"
    secret_file: str = ""
    hosts: dict[str, tuple[str, dict[str, str]]] = Field(default_factory=dict)
    """The host table (name -> (status, capabilities)) for a child supervisor's placements."""
    parent_host: str | None = None
    """The supervisor's host: a child placed on another host dies with its own host's admin."""
    fault_injection: bool = True
    """False: the child has no fault layer (``system.fault_injection``)."""
    start_delay: float = 0.0
    """An injected slow start: seconds to wait before ``on_start``."""
    start_failure: str | None = None
    """An injected start failure: the reason the start fails with."""


class _Adopt(Message):
    """Supervisor -> a spare host it keeps ready: die with me (parent_pid) until used."""

    kind: Literal["_supervision.adopt"] = "_supervision.adopt"
    parent_pid: int


class _Started(Message):
    """Child -> supervisor: on_start (or the child supervisor's boot) succeeded.

    A child supervisor names its event stream (``incarnation``) and how many events it had
    reported (``events``): the parent's next event is ordered after those.
    """

    kind: Literal["_supervision.started"] = "_supervision.started"
    pid: int
    incarnation: str = ""
    events: int = 0
    host: str | None = None
    """The host it runs on (``UNDERSTUDY_HOST`` of its process)."""


class _StartFailed(Message):
    """Child -> supervisor: starting failed with ``reason``; the child waits to be stopped."""

    kind: Literal["_supervision.start_failed"] = "_supervision.start_failed"
    reason: str
    offender: str | None = None
    incarnation: str = ""
    events: int = 0


class _Exiting(Message):
    """Child -> supervisor: I am done, with ``reason``; stop my process."""

    kind: Literal["_supervision.exiting"] = "_supervision.exiting"
    reason: str
    incarnation: str = ""
    events: int = 0


class _Succeeded(Message):
    """Child -> supervisor: a unit of my work succeeded (``Worker.report_success``); a
    ``restart_limit`` with ``reset_on: success`` clears my restart count."""

    kind: Literal["_supervision.succeeded"] = "_supervision.succeeded"


class _Stop(Message):
    """Supervisor -> child: stop in order (on_stop runs), then report _Exiting."""

    kind: Literal["_supervision.stop"] = "_supervision.stop"
    reason: str = SHUTDOWN


class _Gone(Message):
    """Reply from an actor that is exiting: the request was not handled; resolve again."""

    kind: Literal["_supervision.gone"] = "_supervision.gone"
    path: str


class _Register(Message):
    """Supervisor -> guardian: ``path`` now lives at ``address``; the guardian acknowledges."""

    kind: Literal["_supervision.register"] = "_supervision.register"
    path: str
    address: ActorRef
    pid: int | None = None
    roles: list[str] = Field(default_factory=list)
    host: str | None = None


class _Unregister(Message):
    """Supervisor -> guardian: the actor at ``path`` has exited.

    ``pending`` says a restart may follow: resolutions of ``path`` wait for it; ``reason`` is
    the actor's exit reason.
    """

    kind: Literal["_supervision.unregister"] = "_supervision.unregister"
    path: str
    address: ActorRef
    pending: bool = False
    reason: str = ""
    marks: list[tuple[int, int, int]] | None = None
    """Its handled marks, (sender nonce, seq, n) each (``actors.core.link_marks``); None: none."""
    sends: list[tuple[str, int]] = Field(default_factory=list)
    """Messages it had queued per receiver (``ActorRef.key``), from its sent-counts file."""
    ledger: LedgerSnapshot | None = None
    """Its ledger counters from its tally file, when it was killed before reporting them."""


class _Resolve(Message):
    """Anyone -> guardian: where does ``path`` live?

    ``stale`` is an address the asker found dead: the guardian answers with a different one,
    waiting up to ``wait`` seconds while a restart is pending. ``watch`` subscribes the asker to
    later changes of ``path`` (sent as unsolicited _Resolved messages).
    """

    kind: Literal["_supervision.resolve"] = "_supervision.resolve"
    path: str
    stale: ActorRef | None = None
    wait: float = 0.0
    watch: bool = False


class _Resolved(Message):
    """Guardian -> asker: ``path`` lives at ``address`` (None: no live actor there).

    Sent to watchers when the actor at ``path`` exits: ``reason`` is its exit reason.
    """

    kind: Literal["_supervision.resolved"] = "_supervision.resolved"
    path: str
    address: ActorRef | None
    pid: int | None = None
    detail: str = ""
    reason: str = ""
    marks: list[tuple[int, int, int]] | None = None
    """The exited actor's handled marks, (sender nonce, seq, n) each (None: unknown)."""


class _RetryRestart(Message):
    """Supervisor -> itself: try again to restart ``child_id`` (OTP's try_again_restart)."""

    kind: Literal["_supervision.retry_restart"] = "_supervision.retry_restart"
    child_id: str
    count: bool = True


class _Report(Message):
    """Supervisor -> guardian: one supervision event; ``n`` numbers it per supervisor."""

    kind: Literal["_supervision.report"] = "_supervision.report"
    incarnation: str
    n: int
    time: float
    supervisor: str
    child_id: str | None
    event: EventName
    reason: str | None = None
    after: dict[str, int] = Field(default_factory=dict)
    host: str | None = None


class _Boot(Message):
    """Runtime -> guardian: start the root supervisor from ``spec``."""

    kind: Literal["_supervision.boot"] = "_supervision.boot"
    spec: AnyChildSpec
    max_message_size: int
    resend_after: float = 0.5
    resend_max: float = 8.0
    state_dir: str = ".understudy"
    secret_file: str = ""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    admin: str = "in-process"
    """The leader's admin address (host:port), as hosts list it."""
    owner_pid: int | None = None
    principals: dict[str, list[str]] = Field(default_factory=dict)
    fault_injection: bool = True


class _ShutdownTree(Message):
    """Runtime -> guardian: stop the root (and so the whole tree) in order."""

    kind: Literal["_supervision.shutdown_tree"] = "_supervision.shutdown_tree"


class _Ack(Message):
    """A bare acknowledgement between Understudy's own actors; ``n`` is the sender's event count."""

    kind: Literal["_supervision.ack"] = "_supervision.ack"
    incarnation: str = ""
    n: int = 0


class _Identify(Message):
    """Worker -> guardian: who sent me messages from ``address``? Answered ``_Identified``.

    The guardian remembers the asker: if the address stops being that identity (its actor
    exited), it sends ``_Identified(identity=None)`` again, unsolicited.
    """

    kind: Literal["_supervision.identify"] = "_supervision.identify"
    address: ActorRef


class _Identified(Message):
    """Guardian -> worker: the verified identity at ``address`` (None: unknown)."""

    kind: Literal["_supervision.identified"] = "_supervision.identified"
    address: ActorRef
    identity: Identity | None = None
    reason: str = ""
    """Sent again to the asker when that actor exits: its exit reason."""
    gone: bool = False
    """The actor at ``address`` had already exited when the question arrived."""
    sends: list[tuple[str, int]] = Field(default_factory=list)
    """When it exited: the messages it had queued per receiver (``ActorRef.key``)."""


class _Challenge(Message):
    """External client -> guardian: give me a login nonce. Answered ``_Challenged``."""

    kind: Literal["_supervision.challenge"] = "_supervision.challenge"


class _Challenged(Message):
    """Guardian -> client: prove a principal's key over this one-use ``nonce``."""

    kind: Literal["_supervision.challenged"] = "_supervision.challenged"
    nonce: str


class _Login(Message):
    """External client -> guardian: act as ``principal`` (``actors.core.identities``).

    Answered Ok, or ErrorReply(PermissionDenied) saying why.
    """

    kind: Literal["_supervision.login"] = "_supervision.login"
    principal: str = Field(max_length=64)
    proof: str = Field(max_length=128)


# --- Hosts (actors.cluster) ----------------------------------------------------------------


class _Heartbeat(Message):
    """Host keeper -> host agent: are you there?"""

    kind: Literal["_cluster.heartbeat"] = "_cluster.heartbeat"
    seq: int
    stop_after: float = 0.0
    """A member that hears no heartbeat for this long stops its workers (partition safety);
    0: never."""


class _HeartbeatAck(Message):
    """Host agent -> host keeper."""

    kind: Literal["_cluster.heartbeat_ack"] = "_cluster.heartbeat_ack"
    seq: int
    host: str


class _HostChanged(Message):
    """Host keeper -> guardian: a host's status changed (or it joined)."""

    kind: Literal["_cluster.host_changed"] = "_cluster.host_changed"
    name: str
    address: str
    status: Literal["up", "suspect", "down", "leaving"]
    capabilities: dict[str, str] = Field(default_factory=dict)
    reason: str = ""
    last_seen: float | None = None


class _HostTable(Message):
    """Guardian -> root supervisor -> child supervisors: the hosts and their status, for
    placement and remote exits (a child on a host now ``down`` exits ``noconnection``)."""

    kind: Literal["_cluster.host_table"] = "_cluster.host_table"
    hosts: dict[str, tuple[str, dict[str, str]]] = Field(default_factory=dict)
    """name -> (status, capabilities)."""


class _KeeperStart(Message):
    """Guardian -> host keeper: watch the convention's hosts with these detector settings."""

    kind: Literal["_cluster.keeper_start"] = "_cluster.keeper_start"
    cluster: ClusterConfig
    guardian: ActorRef


class _Leave(Message):
    """``understudy join`` -> its host agent: this host leaves; answer when its workers are
    gone (moved or stopped by their supervisors), or after ``timeout`` seconds."""

    kind: Literal["_cluster.leave"] = "_cluster.leave"
    timeout: float = 30.0


class _HostLeaving(Message):
    """Host agent -> host keeper: my host leaves; have its children moved or stopped."""

    kind: Literal["_cluster.host_leaving"] = "_cluster.host_leaving"
    host: str


class _Left(Message):
    """Host agent -> ``understudy join``: the host's workers are gone (``remaining`` left)."""

    kind: Literal["_cluster.left"] = "_cluster.left"
    remaining: int = 0


class _Faults(Message):
    """Guardian -> every actor of the tree: the faults active now (with when each began), and
    the directory where heals are marked (a hang waits for its mark) and where injections
    that a kill would lose are journalled first."""

    kind: Literal["_faults.active"] = "_faults.active"
    faults: list[tuple[AnyFault, float]] = Field(default_factory=list)
    fault_dir: str = ""
