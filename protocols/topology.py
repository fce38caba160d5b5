"""The schema of ``topology.yaml``: the supervision tree and the system it runs on.

Mirrors OTP's child specification and supervisor flags::

    system:                       # SystemConfig
      base: multiprocTCPBase      # or simpleSystemBase
      admin_port: null            # null: pick a free port
      listen: 127.0.0.1           # the one address every socket binds
      cluster: {secret_file: null}  # null: $UNDERSTUDY_SECRET_FILE, else <state_dir>/secret
      principals:                 # external clients (CLI, Runtime) and their roles
        operator: {roles: [operator]}
    root:                         # SupervisorSpec
      strategy: one_for_one
      children:
        - id: echo                # a worker ChildSpec (no `type`, or `type: worker`)
          start: mypkg.workers:Echo
        - id: pool                # a SupervisorSpec child
          type: supervisor
          strategy: simple_one_for_one
          template: {id: job, start: mypkg.workers:Job, restart: temporary}

Validation follows OTP's ``check_childspecs`` and ``check_flags``: unique child ids, a
simple_one_for_one supervisor has a template and no static children, ``significant`` children
are never permanent and need an ``auto_shutdown`` other than ``never``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CHILD_ID_PATTERN",
    "DEFAULT_STATE_DIR",
    "HOST_NAME_PATTERN",
    "PRINCIPAL_PATTERN",
    "RESERVED_PRINCIPALS",
    "ROLE_NAMES",
    "START_PATTERN",
    "AnyChildSpec",
    "AutoShutdown",
    "Backoff",
    "Base",
    "ChildSpec",
    "ClusterConfig",
    "MetricsConfig",
    "ModelConfig",
    "ModelPrice",
    "Placement",
    "PrincipalSpec",
    "RestartLimit",
    "RestartType",
    "Role",
    "Shutdown",
    "Strategy",
    "SupervisorSpec",
    "SystemConfig",
    "Topology",
]


RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]
Shutdown = Annotated[float, Field(ge=0)] | Literal["brutal_kill", "infinity"]
Base = Literal["simpleSystemBase", "multiprocTCPBase"]
Role = Literal["reader", "operator", "admin", "superuser"]

CHILD_ID_PATTERN = r"^[A-Za-z0-9_.\-]+$"
HOST_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""A host's name in a cluster (``understudy join --name``)."""
START_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
DEFAULT_STATE_DIR = ".understudy"
PRINCIPAL_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}$"
#: Names no principal or agent may take: the owner program of the tree acts as ``system``.
RESERVED_PRINCIPALS = frozenset({"system"})
#: The roles of the access policy, weakest first (their actions: actors.services.access_policy).
ROLE_NAMES = ("reader", "operator", "admin", "superuser")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backoff(_Spec):
    """Delay restarts exponentially: ``base * 2**n`` seconds for the n-th recent restart, at
    most ``cap`` (n counts this child's restarts within the supervisor's period)."""

    base: Annotated[float, Field(gt=0)] = 0.1
    cap: Annotated[float, Field(gt=0)] = 5.0


class RestartLimit(_Spec):
    """A restart limit of one child, counted apart from its supervisor's intensity.

    Akka's per-child ``maxNrOfRetries`` / ``withinTimeRange`` with the reset on success of
    Akka's ``BackoffSupervisor``: a restart is allowed while this child's restarts since its
    last reset (only those within ``within`` seconds, when set), this one included, number at
    most ``max_restarts``. ``reset_on: success`` clears the count (and the ``backoff``
    history) each time the worker reports a success (``Worker.report_success``).
    ``on_limit: stop`` keeps the child down alone (its spec kept; a simple_one_for_one child
    is removed) and its siblings run on; ``escalate`` makes the supervisor shut down as when
    its intensity is exceeded. The restarts of a child with a limit do not count toward the
    supervisor's intensity.
    """

    max_restarts: Annotated[int, Field(ge=0)] = 3
    within: Annotated[float, Field(gt=0)] | None = None
    reset_on: Literal["success", "never"] = "success"
    on_limit: Literal["stop", "escalate"] = "stop"


class Placement(_Spec):
    """Where a child runs: on the host named ``host``, or on a host whose capabilities include
    every ``capabilities`` pair. Without a placement a child runs on its supervisor's host."""

    host: Annotated[str, Field(pattern=HOST_NAME_PATTERN)] | None = None
    capabilities: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_rule(self) -> Placement:
        if (self.host is None) == (not self.capabilities):
            msg = "placement takes either `host: NAME` or `capabilities: {KEY: VALUE}`"
            raise ValueError(msg)
        return self

    def allows(self, name: str, capabilities: dict[str, str]) -> bool:
        """Whether a host called ``name`` with ``capabilities`` satisfies this placement."""
        if self.host is not None:
            return name == self.host
        return all(capabilities.get(key) == value for key, value in self.capabilities.items())

    def describe(self) -> str:
        """The rule in words, for a reason."""
        if self.host is not None:
            return f"host {self.host!r}"
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(self.capabilities.items()))
        return f"capabilities {pairs}"


class ChildSpec(_Spec):
    """A worker child: which class to start, with which args, and how to restart and stop it.

    ``decider`` ("module:function") maps an abnormal exit reason to a directive, as Akka's
    supervisor strategies do: ``(directive, delay)`` with directive "restart", "stop" (stay
    down, spec kept) or "escalate" (the supervisor exits with that reason); ``delay`` seconds
    before a restart (e.g. a Retry-After). ``backoff`` delays repeated restarts;
    ``restart_limit`` bounds this child's own restarts (see ``RestartLimit``).
    """

    type: Literal["worker"] = "worker"
    id: Annotated[str, Field(pattern=CHILD_ID_PATTERN, description="unique among siblings")]
    start: Annotated[str, Field(pattern=START_PATTERN, description="module:Class of a Worker")]
    args: dict[str, Any] = Field(default_factory=dict)
    restart: RestartType = "permanent"
    shutdown: Shutdown = 5.0
    significant: bool = False
    decider: Annotated[str, Field(pattern=START_PATTERN)] | None = None
    backoff: Backoff | None = None
    restart_limit: RestartLimit | None = None
    roles: list[Role] = Field(
        default_factory=list,
        description="the access roles this actor holds, acting as its path (e.g. [admin])",
    )
    placement: Placement | None = None
    spread: Literal["round_robin", "least_loaded"] | None = Field(
        default=None,
        description="simple_one_for_one templates: how children are spread over the hosts "
        "the placement allows",
    )

    @model_validator(mode="after")
    def _significant_is_not_permanent(self) -> ChildSpec:
        _check_significant(self.significant, self.restart)
        return self


class SupervisorSpec(_Spec):
    """A supervisor: its flags and its children (or, for simple_one_for_one, its template)."""

    type: Literal["supervisor"] = "supervisor"
    id: Annotated[str, Field(pattern=CHILD_ID_PATTERN)]
    strategy: Strategy = "one_for_one"
    intensity: Annotated[int, Field(ge=0)] = 1
    period: Annotated[float, Field(gt=0)] = 5.0
    auto_shutdown: AutoShutdown = "never"
    children: list[Annotated[ChildSpec | SupervisorSpec, Field(discriminator="type")]] = Field(
        default_factory=list
    )
    template: ChildSpec | None = None
    restart: RestartType = "permanent"
    shutdown: Shutdown = "infinity"
    significant: bool = False

    @model_validator(mode="after")
    def _check_flags(self) -> SupervisorSpec:
        _check_significant(self.significant, self.restart)
        if self.strategy == "simple_one_for_one":
            if self.children:
                msg = "a simple_one_for_one supervisor has no static children; use `template`"
                raise ValueError(msg)
            if self.template is None:
                msg = "a simple_one_for_one supervisor needs a `template` child spec"
                raise ValueError(msg)
            if self.auto_shutdown != "never":
                msg = "auto_shutdown must be `never` on a simple_one_for_one supervisor"
                raise ValueError(msg)
        elif self.template is not None:
            msg = f"`template` is only valid with strategy simple_one_for_one, not {self.strategy}"
            raise ValueError(msg)
        seen: set[str] = set()
        for child in self.children:
            if child.id in seen:
                msg = f"duplicate child id {child.id!r}"
                raise ValueError(msg)
            seen.add(child.id)
            if child.significant and self.auto_shutdown == "never":
                msg = (
                    f"child {child.id!r} is significant but auto_shutdown is `never`; "
                    "set auto_shutdown to any_significant or all_significant"
                )
                raise ValueError(msg)
        return self

    def child(self, child_id: str) -> ChildSpec | SupervisorSpec | None:
        """Return the static child spec with ``child_id``, or None."""
        return next((c for c in self.children if c.id == child_id), None)


def _check_significant(significant: bool, restart: RestartType) -> None:
    if significant and restart == "permanent":
        msg = "a significant child must be transient or temporary, not permanent"
        raise ValueError(msg)


AnyChildSpec = Annotated[ChildSpec | SupervisorSpec, Field(discriminator="type")]


class ModelConfig(_Spec):
    """The chat-completions endpoint agents use (else OPENAI_BASE_URL / OPENAI_API_KEY, else
    `understudy up` starts the embedded model server)."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    model: str = "understudy-embedded"


class ModelPrice(_Spec):
    """What a model's tokens cost, in US dollars per million tokens."""

    input: Annotated[float, Field(ge=0, description="USD per million input (prompt) tokens")]
    output: Annotated[float, Field(ge=0, description="USD per million output tokens")]


class MetricsConfig(_Spec):
    """Prometheus metrics (``actors.core.runtime_metrics``).

    ``port``: serve them on ``http://127.0.0.1:<port>/metrics`` while the runtime runs
    (``understudy up --metrics-port`` overrides it; none by default). ``prices``: the price
    table, model name -> USD per million input and output tokens; a model in it gets an
    estimated cost (``understudy_model_cost_dollars_total``).
    """

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    prices: dict[str, ModelPrice] = Field(default_factory=dict)


class ClusterConfig(_Spec):
    """How the processes and hosts of a deployment trust and watch each other.

    The failure detector is phi accrual (as in Akka and Cassandra): the leader sends every
    member a heartbeat each ``heartbeat_interval`` seconds and computes, from the history of
    the intervals between replies, phi = -log10(P(a reply this late)), with the expected
    interval lengthened by ``acceptable_heartbeat_pause``. A member is ``suspect`` above
    ``suspect_threshold`` and ``down`` above ``threshold``. A pause (GC, SIGSTOP, a slow
    network) shorter than ``acceptable_heartbeat_pause`` is tolerated; with the defaults a
    dead host is declared down about 2.8 s after its last reply.
    """

    secret_file: str | None = Field(
        default=None,
        description="the deployment secret (mode 0600); null: $UNDERSTUDY_SECRET_FILE, "
        "else <state_dir>/secret, created by `understudy up`",
    )
    name: Annotated[str, Field(pattern=HOST_NAME_PATTERN)] = Field(
        default="leader", description="this (the leader's) host name"
    )
    capabilities: dict[str, str] = Field(
        default_factory=dict, description="the leader host's capabilities, for placement"
    )
    heartbeat_interval: Annotated[float, Field(gt=0, le=10)] = 0.2
    acceptable_heartbeat_pause: Annotated[float, Field(ge=0)] = 2.0
    threshold: Annotated[float, Field(gt=0)] = 8.0
    suspect_threshold: Annotated[float, Field(gt=0)] = 3.0
    min_std_deviation: Annotated[float, Field(gt=0)] = 0.1

    @model_validator(mode="after")
    def _check_detector(self) -> ClusterConfig:
        if self.suspect_threshold > self.threshold:
            msg = "suspect_threshold must not exceed threshold"
            raise ValueError(msg)
        return self


class PrincipalSpec(_Spec):
    """An external client (the CLI, a program using the Runtime) and the roles it holds."""

    roles: list[Role] = Field(default_factory=list)


def _default_principals() -> dict[str, PrincipalSpec]:
    return {
        "operator": PrincipalSpec(roles=["operator"]),
        "admin": PrincipalSpec(roles=["admin"]),
    }


class LinkConfig(_Spec):
    """The data-path links between actors (``actors.core.link``)."""

    resend_after: Annotated[
        float,
        Field(gt=0, description="seconds before an unacknowledged frame is sent again"),
    ] = 0.5
    resend_max: Annotated[
        float,
        Field(gt=0, description="the longest wait between resends (the wait doubles up to it)"),
    ] = 8.0

    @model_validator(mode="after")
    def _check_order(self) -> LinkConfig:
        if self.resend_max < self.resend_after:
            msg = f"resend_max ({self.resend_max}) must be >= resend_after ({self.resend_after})"
            raise ValueError(msg)
        return self


class SystemConfig(_Spec):
    """Which Thespian base runs the tree, and the runtime's knobs."""

    base: Base = "multiprocTCPBase"
    admin_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    listen: Annotated[str, Field(description="the IPv4 address every socket binds")] = "127.0.0.1"
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    principals: dict[str, PrincipalSpec] = Field(default_factory=_default_principals)
    state_dir: str = DEFAULT_STATE_DIR
    max_message_size: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    links: LinkConfig = Field(default_factory=LinkConfig)
    fault_injection: Annotated[
        bool,
        Field(
            description="allow faults to be injected (rt.faults, `understudy experiment`); "
            "false removes the fault layer from every actor and refuses injections"
        ),
    ] = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    model: ModelConfig | None = None
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="after")
    def _check_security(self) -> SystemConfig:
        try:
            address = ipaddress.IPv4Address(self.listen)
        except ValueError:
            msg = f"listen must be an IPv4 address, got {self.listen!r}"
            raise ValueError(msg) from None
        if address.is_unspecified:
            msg = "listen 0.0.0.0 binds every interface; name the one address to bind"
            raise ValueError(msg)
        for name in self.principals:
            if name in RESERVED_PRINCIPALS:
                msg = f"principal name {name!r} is reserved (the owner program acts as it)"
                raise ValueError(msg)
            if not re.match(PRINCIPAL_PATTERN, name):
                msg = f"principal name {name!r} must match {PRINCIPAL_PATTERN}"
                raise ValueError(msg)
        return self


class Topology(_Spec):
    """A whole deployment: the system block and the root supervisor."""

    system: SystemConfig = Field(default_factory=SystemConfig)
    root: SupervisorSpec
