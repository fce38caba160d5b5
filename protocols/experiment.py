"""The experiment file: a tree, a workload, faults on a schedule, and what must hold.

An experiment (YAML; its JSON Schema is ``protocols/schemas/experiment.schema.json``) names a
topology, drives a workload against it for ``duration`` seconds while its faults are injected,
checks its steady-state probes before and after (and during, if asked), and checks its
invariants from the ledger, the supervision events and the operation history::

    title: kill the worker under load
    seed: 4242
    topology: topology.yaml
    duration: 30
    workload:
      - {kind: messages, to: root/svc/worker, message: {kind: example.ping, body: {token: w}},
         rate: 100}
    steady_state:
      - {probe: answers, path: root/svc/worker, within: 1.0}
    faults:
      - {kind: kill, target: root/svc/worker, schedule: {every: 3, max_total: 3}}
      - {kind: drop, target: root/svc/worker, message_kind: example.ping, probability: 0.05}
    invariants: [no_lost_messages, tree_alive, restart_limits, no_orphans, fail_fast]
    report: {out: reports/kill-under-load, formats: [json, junit, html]}

When a fault is injected: ``at: T`` once, T seconds into the fault phase; otherwise from
``after`` (default 0) on, once, or with a ``schedule`` every ``every`` seconds (plus up to
``jitter``), at most ``max_total`` times. A fault that lasts (the message kinds, ``hang``)
stays active for ``for`` seconds, or to the end of the fault phase; ``max_active`` bounds how
many of one fault's injections are active at once. ``pick`` chooses among the actors the
``target`` glob matches: ``one``, ``all``, ``{fixed: N}`` or ``{percent: P}``. Every random
choice of fault number ``i`` draws from its own generator, seeded from the experiment's
``seed`` and ``i``, so the same file and seed give the same faults.

Pure data: nothing here imports Thespian or ``actors``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.faults import DelaySpec, TargetPick

__all__ = [
    "ACTOR_STEP_KINDS",
    "HOST_STEP_KINDS",
    "INVARIANTS",
    "MESSAGE_STEP_KINDS",
    "REPORT_FORMATS",
    "ActorFaultStep",
    "AnswersProbe",
    "ChildrenProbe",
    "Experiment",
    "FaultStep",
    "GoalsWorkload",
    "HostFaultStep",
    "HostSpec",
    "InvariantName",
    "LlmError",
    "LlmFaultStep",
    "MessageFaultStep",
    "MessageTemplate",
    "MessagesWorkload",
    "Probe",
    "PythonProbe",
    "PythonWorkload",
    "ReportFormat",
    "ReportSpec",
    "Schedule",
    "TasksWorkload",
    "UserInvariant",
    "Workload",
    "sub_seed",
]

_CALL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Call = Annotated[str, Field(pattern=_CALL.pattern, description="`module:function`")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def sub_seed(seed: int, index: int, salt: str = "") -> int:
    """The seed of fault number ``index`` (or of another random stream, named by ``salt``):
    independent of the other faults', fixed by the experiment's seed."""
    digest = hashlib.sha256(f"{seed}:{index}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --- Faults ------------------------------------------------------------------------------------


class Schedule(_Strict):
    """Inject every ``every`` seconds (plus a uniform draw of up to ``jitter``), the first at
    ``after + every``, at most ``max_total`` times."""

    every: Positive
    jitter: Seconds = 0.0
    max_total: Annotated[int, Field(ge=1)] | None = None


class _When(_Strict):
    """When and how often a fault is injected, and how long each injection lasts."""

    at: Seconds | None = None
    after: Seconds = 0.0
    for_: Annotated[Positive | None, Field(alias="for")] = None
    schedule: Schedule | None = None
    max_active: Annotated[int, Field(ge=1)] | None = None
    pick: TargetPick = "all"

    @model_validator(mode="after")
    def _when(self) -> _When:
        if self.at is not None and (self.schedule is not None or self.after):
            msg = "`at` injects once at a time; it does not go with `after` or `schedule`"
            raise ValueError(msg)
        return self


class _Triggered(_When):
    """Faults that hit particular messages: selectors and one trigger."""

    message_kind: str | None = None
    sender: str | None = None
    nth: Annotated[int, Field(ge=1)] | None = None
    every_nth: Annotated[int, Field(ge=1)] | None = None
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    max_total: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> _Triggered:
        if sum(t is not None for t in (self.nth, self.every_nth, self.probability)) > 1:
            msg = "a fault takes at most one trigger: nth, every_nth or probability"
            raise ValueError(msg)
        return self


MESSAGE_STEP_KINDS = ("drop", "delay", "duplicate", "reorder", "corrupt", "raise")
ACTOR_STEP_KINDS = ("kill", "hang", "pause", "start_failure", "slow_start", "slow_shutdown")
HOST_STEP_KINDS = ("kill_host", "pause_host", "partition")


class MessageFaultStep(_Triggered):
    """A fault on the messages arriving at the actors ``target`` matches."""

    kind: Literal["drop", "delay", "duplicate", "reorder", "corrupt", "raise"]
    target: Annotated[str, Field(min_length=1)]
    delay: DelaySpec | None = None
    window: Annotated[int, Field(ge=2)] | None = None
    """reorder: how many messages are shuffled together."""
    corrupt: Literal["invalid", "truncated"] | None = None
    """corrupt: a schema-invalid field (default), or the bytes cut in half."""

    @model_validator(mode="after")
    def _kind_fields(self) -> MessageFaultStep:
        if (self.kind == "delay") != (self.delay is not None):
            msg = "`delay` is required by a delay fault and valid only there"
            raise ValueError(msg)
        if self.window is not None and self.kind != "reorder":
            msg = "`window` is valid only on a reorder fault"
            raise ValueError(msg)
        if self.corrupt is not None and self.kind != "corrupt":
            msg = "`corrupt` (the mode) is valid only on a corrupt fault"
            raise ValueError(msg)
        return self


class ActorFaultStep(_Triggered):
    """A fault on the actors ``target`` matches: ``kill`` SIGKILLs an actor's process, at once
    (``point: now``, done by the runner) or at a crash point on a matching message
    (``before_handler``, ``after_handler``: before its reply, ``after_reply``: done inside the
    actor); ``hang`` blocks the handler of a matching message for ``seconds``, or until the
    fault is healed (after its ``for``, or at the end of the fault phase) without them; ``pause``
    stops the process for ``seconds`` (default 1: SIGSTOP, then SIGCONT); ``start_failure``
    fails the actor's next starts (its trigger counts start attempts), ``slow_start`` delays
    them by ``seconds``, ``slow_shutdown`` makes it ignore a stop for ``seconds``."""

    kind: Literal["kill", "hang", "pause", "start_failure", "slow_start", "slow_shutdown"]
    target: Annotated[str, Field(min_length=1)]
    point: Literal["now", "before_handler", "after_handler", "after_reply"] = "now"
    seconds: Annotated[float, Field(gt=0, le=300)] | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> ActorFaultStep:
        if self.point != "now" and self.kind != "kill":
            msg = "`point` is valid only on a kill fault"
            raise ValueError(msg)
        if self.kind in ("slow_start", "slow_shutdown") and self.seconds is None:
            msg = f"a {self.kind} fault needs `seconds` (at most 300)"
            raise ValueError(msg)
        if self.kind == "start_failure" and self.seconds is not None:
            msg = "`seconds` is not valid on a start_failure fault"
            raise ValueError(msg)
        if self.kind == "kill" and self.seconds is not None:
            msg = "`seconds` is not valid on a kill fault"
            raise ValueError(msg)
        return self


class HostFaultStep(_When):
    """A fault on member hosts (``target``: a host name glob; ``pick`` among the matching
    hosts): ``kill_host`` SIGKILLs every process of the host, ``pause_host`` stops them for
    ``seconds`` (SIGSTOP, then SIGCONT), ``partition`` cuts the host off the network for
    ``seconds`` (``isolate``: its link goes down; ``halves``: the first half of the hosts, by
    name, is cut off from the leader and the rest; ``one_way``: the leader's traffic to it is
    dropped). Needs the experiment's ``hosts``."""

    kind: Literal["kill_host", "pause_host", "partition"]
    target: Annotated[str, Field(min_length=1)] = "*"
    mode: Literal["isolate", "halves", "one_way"] = "isolate"
    seconds: Positive = 5.0

    @model_validator(mode="after")
    def _kind_fields(self) -> HostFaultStep:
        if self.mode != "isolate" and self.kind != "partition":
            msg = "`mode` is valid only on a partition fault"
            raise ValueError(msg)
        return self


class HostSpec(_Strict):
    """A member host the experiment starts (``understudy join``) beside the leader."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    capabilities: dict[str, str] = Field(default_factory=dict)


LlmError = Literal[
    "429", "500", "502", "503", "401", "400", "timeout", "malformed_tool_call", "truncated"
]


class LlmFaultStep(_When):
    """A fault on the embedded model's answers: each injection makes the next ``count`` chat
    requests fail with ``error`` (``429`` with ``retry_after``, ``500``, ``502``, ``503``,
    ``401``, ``400``, ``timeout``: no answer for ``seconds``, ``malformed_tool_call``, or
    ``truncated``: the answer cut half-way with ``finish_reason: length``)."""

    kind: Literal["llm_error"]
    error: LlmError
    target: str = "model"
    retry_after: Seconds = 1.0
    seconds: Positive = 30.0
    count: Annotated[int, Field(ge=1)] = 1
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    """Each model call is hit with this probability (seeded), up to ``count`` hits."""


FaultStep = Annotated[
    MessageFaultStep | ActorFaultStep | HostFaultStep | LlmFaultStep,
    Field(discriminator="kind"),
]


# --- Workload ----------------------------------------------------------------------------------


class MessageTemplate(_Strict):
    kind: Annotated[str, Field(min_length=1)]
    body: dict[str, Any] = Field(default_factory=dict)


class MessagesWorkload(_Strict):
    """Ask ``to`` with ``message`` ``rate`` times a second; each ask waits ``timeout``."""

    kind: Literal["messages"]
    to: Annotated[str, Field(min_length=1)]
    message: MessageTemplate
    rate: Positive
    timeout: Positive = 2.0
    name: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    """Clients making this workload's operations at once (on multiprocTCPBase; one at a time
    on simpleSystemBase)."""


class TasksWorkload(_Strict):
    """Submit tasks to the scheduler ``rate`` times a second; each is started and completed by
    the workload, so every task should reach a final state."""

    kind: Literal["tasks"]
    scheduler: str = "root/system/scheduler"
    rate: Positive
    timeout: Positive = 2.0
    name: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    """Clients making this workload's operations at once (on multiprocTCPBase; one at a time
    on simpleSystemBase)."""


class GoalsWorkload(_Strict):
    """Run ``goals`` on the orchestrator, one every ``1 / rate`` seconds, round robin."""

    kind: Literal["goals"]
    orchestrator: str = "root/orchestrator"
    goals: Annotated[list[str], Field(min_length=1)]
    rate: Positive
    timeout: Positive = 30.0
    name: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    """Clients making this workload's operations at once (on multiprocTCPBase; one at a time
    on simpleSystemBase)."""


class PythonWorkload(_Strict):
    """Call ``call(context)`` ``rate`` times a second; it returns the operation's value or
    raises to fail it."""

    kind: Literal["python"]
    call: Call
    rate: Positive = 1.0
    name: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    """Clients making this workload's operations at once (on multiprocTCPBase; one at a time
    on simpleSystemBase)."""


Workload = Annotated[
    MessagesWorkload | TasksWorkload | GoalsWorkload | PythonWorkload,
    Field(discriminator="kind"),
]


# --- Steady state ------------------------------------------------------------------------------


class _ProbeBase(_Strict):
    during: bool = False
    """Also check it during the fault phase, every ``interval`` seconds."""
    interval: Positive = 1.0


class AnswersProbe(_ProbeBase):
    """``path`` answers (``message``, or the seam's ledger query) within ``within`` seconds."""

    probe: Literal["answers"]
    path: Annotated[str, Field(min_length=1)]
    within: Positive = 1.0
    message: MessageTemplate | None = None


class ChildrenProbe(_ProbeBase):
    """Every child of the supervisor ``path`` is running."""

    probe: Literal["children_running"]
    path: Annotated[str, Field(min_length=1)]
    within: Positive = 5.0


class PythonProbe(_ProbeBase):
    """``call(context)`` returns true (or ``(ok, detail)``)."""

    probe: Literal["python"]
    call: Call
    path: str | None = None


Probe = Annotated[AnswersProbe | ChildrenProbe | PythonProbe, Field(discriminator="probe")]


# --- Invariants and report ---------------------------------------------------------------------

InvariantName = Literal[
    "no_lost_messages",
    "tree_alive",
    "restart_limits",
    "tasks_terminal",
    "fail_fast",
    "no_orphans",
    "liveness_after_heal",
    "single_instance",
    "llm_budget",
]
INVARIANTS: tuple[InvariantName, ...] = get_args(InvariantName)


class UserInvariant(_Strict):
    """``call(history, journal)`` returns true (or ``(ok, detail)``)."""

    name: Annotated[str, Field(min_length=1)]
    call: Call


ReportFormat = Literal["json", "junit", "html"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("json", "junit", "html")
_DEFAULT_INVARIANTS: tuple[InvariantName, ...] = (
    "no_lost_messages",
    "tree_alive",
    "restart_limits",
)


def _default_invariants() -> list[InvariantName | UserInvariant]:
    return list(_DEFAULT_INVARIANTS)


class ReportSpec(_Strict):
    out: str = "reports/experiment"
    formats: list[ReportFormat] = Field(default_factory=lambda: list(REPORT_FORMATS))


class Experiment(_Strict):
    """One experiment file (see the module doc)."""

    title: Annotated[str, Field(min_length=1)]
    seed: int = 0
    topology: str | dict[str, Any]
    """A path relative to the experiment file, or an inline topology."""
    duration: Positive
    quiet: Positive = 5.0
    """After the fault phase: how long the tree may take to settle before the after checks."""
    liveness_within: Positive = 5.0
    """``liveness_after_heal``: every live actor answers within this many seconds."""
    hosts: list[HostSpec] = Field(default_factory=list)
    """Member hosts to start beside the leader (host faults need them)."""
    network: Literal["netns", "loopback"] = "netns"
    """How the hosts are separated: each in its own network namespace (Linux, root), or on
    loopback addresses of this machine (no partitions)."""
    model_quality: Annotated[float, Field(ge=0, le=1)] = 1.0
    """How well the embedded model writes (when the experiment starts it): below 1 each
    criterion of a write is missed with probability 1 - model_quality, seeded by ``seed``."""
    workload: list[Workload] = Field(default_factory=list)
    steady_state: list[Probe] = Field(default_factory=list)
    faults: list[FaultStep] = Field(default_factory=list)
    invariants: list[InvariantName | UserInvariant] = Field(default_factory=_default_invariants)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _hosts_for_host_faults(self) -> Experiment:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            msg = f"host names must be unique, got {names}"
            raise ValueError(msg)
        if any(isinstance(f, HostFaultStep) for f in self.faults) and not self.hosts:
            msg = "host faults (kill_host, pause_host, partition) need `hosts` to act on"
            raise ValueError(msg)
        if self.network == "loopback" and any(
            isinstance(f, HostFaultStep) and f.kind == "partition" for f in self.faults
        ):
            msg = "a partition needs `network: netns` (hosts on loopback share one network)"
            raise ValueError(msg)
        return self
