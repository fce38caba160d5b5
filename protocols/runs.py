"""The run manager protocol: delegated runs, their owners, their tree, and their epochs.

A run is one delegated piece of work: it has an ``owner`` (who asked for it), an optional
``parent`` run (the run that delegated it), a ``status``, an ``epoch``, a ``goal`` and the
paths of the agents working on it. Runs form trees; a run's owner is always its parent's.

Life cycle::

    CreateRun ---> running --CompleteRun--> completed          (final)
                      |  \\---FailRun------> failed --ResumeRun--> running (epoch + 1)
                      \\-----StopRun-------> stopped --ResumeRun--> running (epoch + 1)

Epochs
    A run starts at epoch 1; every ResumeRun adds one. CompleteRun and FailRun name the epoch
    their work belongs to: one from an older epoch (a late report from the run's previous life)
    is ignored, the reply is ``StaleEpochIgnored`` and nothing changes. An epoch newer than the
    run's is bad input (``InvalidEpoch``).

Stopping
    StopRun stops the run and every descendant: each *running* run of that subtree becomes
    ``stopped`` (completed, failed and stopped runs keep their status), and the agents of every
    run of the subtree are terminated through their supervisor (``TerminateChild``), except an
    agent also attached to a running run outside the subtree. The reply, ``RunsStopped``, comes
    once each termination is confirmed (or after ``StopRun.wait`` seconds, naming the agents not
    confirmed; those are retried until confirmed, even across restarts of the run manager).

Parents and resumption
    A new run's parent must be running, and ResumeRun needs the run's parent (if any) to be
    running: a stopped subtree cannot grow again, and a late CreateRun from an agent of a stopped
    run is refused. ResumeRun resumes only the run it names, not its descendants.

Owners
    Every command names its ``owner``. A run of another owner is answered exactly like a run
    that does not exist (``UnknownRun``, "no run '<id>'"): owners learn nothing about each
    other's runs. ListRuns lists only the asker's runs. (RunStatistics counts every run: it is
    the operator's view for ``understudy status``.)

Errors (``ErrorReply.error``): ``UnknownRun``, ``InvalidTransition`` (the command does not apply
to the run's status, or its parent's; nothing changes), ``InvalidEpoch``, ``InvalidAgentPath``
(an agent path not directly under the run manager's agents supervisor), ``InvalidResult``
(a result that is not plain JSON), ``UnexpectedMessage``.

Durability: a command's changes are committed to ``<state_dir>/runs.db`` (SQLite, WAL) before
its reply is sent; runs survive restarts of the run manager.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from protocols._base import Message

RunStatus = Literal["running", "stopped", "completed", "failed"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)

RunId = Annotated[str, Field(min_length=1, max_length=200)]
Owner = Annotated[str, Field(min_length=1, max_length=200)]
AgentPath = Annotated[str, Field(min_length=1, max_length=500)]
Epoch = Annotated[int, Field(ge=1, le=2**62)]
EpochSeconds = Annotated[float, Field(allow_inf_nan=False)]

RUNS_PATH = "root/system/runs"
"""Where the default topology runs the run manager."""

DEFAULT_AGENTS_SUPERVISOR = "root/agents"
"""The simple_one_for_one supervisor the run manager terminates agents through, by default."""

MAX_WAIT = 3600.0
"""The longest StopRun wait, in seconds."""


# --- Replies --------------------------------------------------------------------------------


class RunInfo(Message):
    """One run as the run manager knows it (the reply to most commands).

    ``seq`` numbers runs in creation order. Times are epoch seconds. ``result`` is set by
    CompleteRun, ``reason`` by FailRun (and cleared by ResumeRun).
    """

    kind: Literal["runs.run_info"] = "runs.run_info"
    id: RunId
    seq: int
    owner: Owner
    parent: RunId | None = None
    status: RunStatus
    epoch: Epoch
    goal: str
    agents: list[AgentPath] = Field(default_factory=list)
    created_at: EpochSeconds
    updated_at: EpochSeconds
    result: Any = None
    reason: str | None = None


class Runs(Message):
    """The reply to ListRuns, in creation order."""

    kind: Literal["runs.runs"] = "runs.runs"
    runs: list[RunInfo]


class StaleEpochIgnored(Message):
    """The reply to a CompleteRun or FailRun from an older epoch: nothing changed.

    ``run`` is the run as it is (unchanged); ``epoch`` the stale epoch the command named.
    """

    kind: Literal["runs.stale_epoch_ignored"] = "runs.stale_epoch_ignored"
    detail: str
    epoch: Epoch
    run: RunInfo


class RunsStopped(Message):
    """The reply to StopRun.

    ``stopped`` lists the runs this command moved to ``stopped`` (the named run and its running
    descendants); ``subtree`` every run id of the named run's subtree, itself first.
    Agents: ``terminated`` were stopped by their supervisor, ``already_gone`` were not running
    any more, ``unconfirmed`` (agent path -> why) could not be confirmed within ``StopRun.wait``.
    """

    kind: Literal["runs.runs_stopped"] = "runs.runs_stopped"
    run_id: RunId
    stopped: list[RunInfo]
    subtree: list[RunId]
    terminated: list[AgentPath] = Field(default_factory=list)
    already_gone: list[AgentPath] = Field(default_factory=list)
    unconfirmed: dict[str, str] = Field(default_factory=dict)


class RunStatistics(Message):
    """How many runs are in each status, over all owners (the reply to GetRunStatistics)."""

    kind: Literal["runs.statistics"] = "runs.statistics"
    running: int = 0
    stopped: int = 0
    completed: int = 0
    failed: int = 0
    total: int = 0
    pending_terminations: int = 0


# --- Commands -------------------------------------------------------------------------------


class CreateRun(Message):
    """Create a running run (epoch 1) for ``owner``, under ``parent`` if given; replies RunInfo."""

    kind: Literal["runs.create_run"] = "runs.create_run"
    owner: Owner
    goal: str
    parent: RunId | None = None
    agents: list[AgentPath] = Field(default_factory=list)


class CompleteRun(Message):
    """Complete a running run with ``result``; replies RunInfo, or StaleEpochIgnored."""

    kind: Literal["runs.complete_run"] = "runs.complete_run"
    run_id: RunId
    owner: Owner
    epoch: Epoch
    result: Any = None


class FailRun(Message):
    """Fail a running run with ``reason``; replies RunInfo, or StaleEpochIgnored."""

    kind: Literal["runs.fail_run"] = "runs.fail_run"
    run_id: RunId
    owner: Owner
    epoch: Epoch
    reason: str


class StopRun(Message):
    """Stop a run and every descendant, terminating their agents; replies RunsStopped.

    ``wait`` bounds how long the reply waits for the agents' supervisor to confirm the
    terminations (keep it below the asker's timeout).
    """

    kind: Literal["runs.stop_run"] = "runs.stop_run"
    run_id: RunId
    owner: Owner
    wait: Annotated[float, Field(gt=0, le=MAX_WAIT)] = 4.0


class ResumeRun(Message):
    """Run a stopped or failed run again, in a new epoch (epoch + 1); replies RunInfo."""

    kind: Literal["runs.resume_run"] = "runs.resume_run"
    run_id: RunId
    owner: Owner


class AttachAgent(Message):
    """Record that the agent at ``agent_path`` works on a running run; replies RunInfo."""

    kind: Literal["runs.attach_agent"] = "runs.attach_agent"
    run_id: RunId
    owner: Owner
    agent_path: AgentPath


class GetRun(Message):
    """Ask for one run; replies RunInfo."""

    kind: Literal["runs.get_run"] = "runs.get_run"
    run_id: RunId
    owner: Owner


class ListRuns(Message):
    """List ``owner``'s runs, optionally only those with ``status`` or with parent ``parent``."""

    kind: Literal["runs.list_runs"] = "runs.list_runs"
    owner: Owner
    status: RunStatus | None = None
    parent: RunId | None = None


class GetRunStatistics(Message):
    """Ask for RunStatistics."""

    kind: Literal["runs.get_statistics"] = "runs.get_statistics"


RunsCommand = (
    CreateRun
    | CompleteRun
    | FailRun
    | StopRun
    | ResumeRun
    | AttachAgent
    | GetRun
    | ListRuns
    | GetRunStatistics
)


# --- Between the run manager and itself ---------------------------------------------------


class _RetryTerminations(Message):
    """Run manager -> itself (a timer): ask again for the terminations not yet confirmed."""

    kind: Literal["_runs.retry_terminations"] = "_runs.retry_terminations"


class _StopExpired(Message):
    """Run manager -> itself (a timer): answer the StopRun numbered ``op`` with what it has."""

    kind: Literal["_runs.stop_expired"] = "_runs.stop_expired"
    op: int


__all__ = [
    "DEFAULT_AGENTS_SUPERVISOR",
    "RUNS_PATH",
    "RUN_STATUSES",
    "AttachAgent",
    "CompleteRun",
    "CreateRun",
    "FailRun",
    "GetRun",
    "GetRunStatistics",
    "ListRuns",
    "ResumeRun",
    "RunInfo",
    "RunStatistics",
    "RunStatus",
    "Runs",
    "RunsCommand",
    "RunsStopped",
    "StaleEpochIgnored",
    "StopRun",
]
