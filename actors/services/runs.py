"""Run manager: delegated runs with owners, a tree, epochs and cascading stops, in SQLite.

The protocol (commands, replies, the life cycle of a run) is ``protocols.runs``; the state
machine is ``actors.services.runs_book.RunBook`` (pure). This worker wires them to messages, the
store and
the agents' supervisor:

    a command       is applied to the book, its changes are committed to ``runs.db`` (SQLite,
                    WAL, one transaction), then the handler returns the reply: an acknowledged
                    command survives a crash or restart of the run manager
    StopRun         commits the stopped runs AND the agents to terminate (the ``terminations``
                    outbox) in one transaction, then asks the agents' supervisor which children
                    it has (``WhichChildren``) and sends ``TerminateChild(<last path segment>)``
                    for each agent still there; an agent not listed is already gone. The reply
                    is deferred until every termination is confirmed or ``StopRun.wait``
                    passes. Confirmed agents leave the outbox; while it holds any, they are
                    asked for again every ``terminate_retry`` seconds and at every start (so
                    at least once, even across a crash, and also when the agents' supervisor
                    starts after the run manager)

Why list the children first: a worker's ``on_reply`` receives replies, but the hosting actor
logs and drops an ``ErrorReply`` (``ChildNotFound`` for an agent already gone) instead of
passing it on, so the run manager only sends TerminateChild to agents it saw listed. A
ChildNotFound that does arrive (an agent exiting between the two requests, once replies carry
errors to ``on_reply``) counts as already gone.

Args (in the topology): ``agents_supervisor`` (path of the simple_one_for_one supervisor of
the agents, default ``root/agents``), ``db`` (file name under the state directory, default
``runs.db``), ``synchronous`` (``FULL`` default, or ``NORMAL``; see
``actors.services.scheduler_journal``),
``terminate_retry`` (seconds between retries of unconfirmed terminations, default 5).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from actors.core.worker import Worker
from actors.services._sqlite import open_store, transaction
from actors.services.runs_book import RunBook, RunError, Stale
from protocols._base import Message
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.runs import (
    DEFAULT_AGENTS_SUPERVISOR,
    AttachAgent,
    CompleteRun,
    CreateRun,
    FailRun,
    GetRun,
    GetRunStatistics,
    ListRuns,
    ResumeRun,
    RunInfo,
    Runs,
    RunsStopped,
    RunStatistics,
    StaleEpochIgnored,
    StopRun,
    _RetryTerminations,
    _StopExpired,
)
from protocols.supervision import Children, TerminateChild, WhichChildren

log = structlog.get_logger("understudy.runs")

DEFAULT_DB = "runs.db"
DEFAULT_TERMINATE_RETRY = 5.0
SCHEMA_VERSION = 1

# --- The store ---------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    parent TEXT,
    status TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    goal TEXT NOT NULL,
    agents TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS terminations (
    agent TEXT PRIMARY KEY
);
"""

_COLUMNS = (
    "id",
    "seq",
    "owner",
    "parent",
    "status",
    "epoch",
    "goal",
    "agents",
    "created_at",
    "updated_at",
    "result",
    "reason",
)
_UPSERT = (
    f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant columns
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


class StoreError(Exception):
    """The store file cannot be used (another schema version)."""


class RunStore:
    """The SQLite file behind one run manager: the runs, and the agents still to terminate.

    Args:
        path: the database file (created with its directory if missing).
        synchronous: ``FULL`` (fsync at every commit) or ``NORMAL`` (survives SIGKILL only).

    Raises:
        StoreError: the file has another schema version.
        sqlite3.Error: the file cannot be opened.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._db = open_store(
            path,
            synchronous=synchronous,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            what="runs",
            error=StoreError,
        )

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``)."""
        value: str = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        return value

    def load_runs(self) -> list[RunInfo]:
        """Return every run in its last committed state, in creation order."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY seq"  # noqa: S608 - constant columns
        ).fetchall()
        runs = []
        for row in rows:
            fields = dict(zip(_COLUMNS, row, strict=True))
            fields["agents"] = json.loads(fields["agents"])
            fields["result"] = json.loads(fields["result"])
            runs.append(RunInfo.model_validate(fields))
        return runs

    def pending_terminations(self) -> list[str]:
        """Return the agents whose termination is not confirmed yet, oldest first."""
        rows = self._db.execute("SELECT agent FROM terminations ORDER BY rowid").fetchall()
        return [row[0] for row in rows]

    def commit(
        self,
        runs: Sequence[RunInfo],
        *,
        terminate: Iterable[str] = (),
        terminated: Iterable[str] = (),
    ) -> None:
        """Write ``runs``, add ``terminate`` to and remove ``terminated`` from the outbox, in ONE
        transaction.

        Raises:
            sqlite3.Error: nothing was written.
        """
        add, done = list(terminate), list(terminated)
        if not runs and not add and not done:
            return
        with self._transaction():
            for run in runs:
                self._db.execute(_UPSERT, _row(run))
            self._db.executemany(
                "INSERT OR IGNORE INTO terminations (agent) VALUES (?)", [(a,) for a in add]
            )
            self._db.executemany("DELETE FROM terminations WHERE agent = ?", [(a,) for a in done])

    def close(self) -> None:
        """Close the database (a later RunStore on the same file sees every commit)."""
        self._db.close()

    def _transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)


def _row(run: RunInfo) -> tuple[Any, ...]:
    data = run.model_dump(mode="json", exclude={"result", "agents", "kind"})
    data["agents"] = json.dumps(run.agents)
    data["result"] = json.dumps(run.result, allow_nan=False)
    return tuple(data[column] for column in _COLUMNS)


# --- The worker ----------------------------------------------------------------------------------


@dataclass
class _StopOp:
    """One StopRun waiting for its agents' terminations to be confirmed."""

    run_id: str
    stopped: list[RunInfo]
    subtree: list[str]
    reply: Callable[[Message], None]
    waiting: set[str]
    timer: int = 0
    terminated: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    unconfirmed: dict[str, str] = field(default_factory=dict)


class RunManager(Worker):
    """The run manager worker (``start: actors.services.runs:RunManager``)."""

    _clock: Callable[[], float] = staticmethod(time.time)

    # --- Life cycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        """Open the store, reload every run, retry the terminations not yet confirmed."""
        self._agents = str(self.args.get("agents_supervisor", DEFAULT_AGENTS_SUPERVISOR))
        self._store = RunStore(
            self.state_dir / str(self.args.get("db", DEFAULT_DB)),
            synchronous=str(self.args.get("synchronous", "FULL")),
        )
        self._book = RunBook(self._store.load_runs())
        self._ops: dict[int, _StopOp] = {}
        self._op_ids = itertools.count(1)
        self._listing: dict[int, list[str]] = {}  # WhichChildren request id -> agents
        self._terminating: dict[int, str] = {}  # TerminateChild request id -> agent
        self._in_flight: set[str] = set()
        self._retry = float(self.args.get("terminate_retry", DEFAULT_TERMINATE_RETRY))
        self._retry_timer: int | None = None
        pending = self._store.pending_terminations()
        log.info(
            "run_manager_started",
            actor=self.path,
            runs=len(self._book),
            pending_terminations=len(pending),
            db=str(self._store.path),
        )
        self._terminate(pending)

    def on_stop(self, reason: str) -> None:
        """Close the store (every command is already committed)."""
        self._store.close()

    # --- The messages we accept ---------------------------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Answer one command of ``protocols.runs`` (or an internal message)."""
        try:
            match message:
                case CreateRun():
                    return self._create(message)
                case CompleteRun():
                    return self._finish(
                        "CompleteRun",
                        self._book.complete(
                            message.run_id,
                            message.owner,
                            message.epoch,
                            message.result,
                            self._clock(),
                        ),
                    )
                case FailRun():
                    return self._finish(
                        "FailRun",
                        self._book.fail(
                            message.run_id,
                            message.owner,
                            message.epoch,
                            message.reason,
                            self._clock(),
                        ),
                    )
                case StopRun():
                    return self._stop(message)
                case ResumeRun():
                    run = self._book.resume(message.run_id, message.owner, self._clock())
                    return self._committed(run, "run_resumed")
                case AttachAgent():
                    self._check_agent(message.agent_path)
                    run = self._book.attach(
                        message.run_id, message.owner, message.agent_path, self._clock()
                    )
                    return self._committed(run, "agent_attached", agent=message.agent_path)
                case GetRun():
                    return self._book.get(message.run_id, message.owner)
                case ListRuns():
                    return Runs(
                        runs=self._book.runs(
                            message.owner, status=message.status, parent=message.parent
                        )
                    )
                case GetRunStatistics():
                    return RunStatistics(
                        **self._book.statistics(),
                        pending_terminations=len(self._store.pending_terminations()),
                    )
                case _StopExpired():
                    self._expire(message.op)
                    return None
                case _RetryTerminations():
                    self._retry_terminations()
                    return None
                case _:
                    log.warning("unexpected_message", actor=self.path, kind=message.kind)
                    return ErrorReply(
                        error=ErrorName.UNEXPECTED_MESSAGE,
                        message=f"the run manager does not handle {message.kind!r}",
                    )
        except RunError as exc:
            log.info(
                "command_rejected",
                actor=self.path,
                kind=message.kind,
                error=exc.error,
                detail=exc.message,
            )
            return ErrorReply(error=exc.error, message=exc.message)

    # --- Commands -------------------------------------------------------------------------------

    def _create(self, message: CreateRun) -> Message:
        for agent in message.agents:
            self._check_agent(agent)
        run = self._book.create(
            message.owner, message.goal, self._clock(), parent=message.parent, agents=message.agents
        )
        return self._committed(run, "run_created")

    def _finish(self, command: str, outcome: RunInfo | Stale) -> Message:
        if isinstance(outcome, Stale):
            log.info(
                "stale_epoch_ignored",
                actor=self.path,
                command=command,
                run_id=outcome.run.id,
                epoch=outcome.epoch,
                current_epoch=outcome.run.epoch,
            )
            return StaleEpochIgnored(detail=outcome.detail, epoch=outcome.epoch, run=outcome.run)
        return self._committed(outcome, f"run_{outcome.status}")

    def _committed(self, run: RunInfo, event: str, **extra: Any) -> RunInfo:
        self._store.commit([run])
        log.info(
            event,
            actor=self.path,
            run_id=run.id,
            owner=run.owner,
            status=run.status,
            epoch=run.epoch,
            **extra,
        )
        return run

    def _stop(self, message: StopRun) -> Message | None:
        outcome = self._book.stop(message.run_id, message.owner, self._clock())
        self._store.commit(outcome.stopped, terminate=outcome.agents)
        log.info(
            "run_stopped",
            actor=self.path,
            run_id=message.run_id,
            owner=message.owner,
            stopped=[r.id for r in outcome.stopped],
            subtree=outcome.subtree,
            agents=outcome.agents,
        )
        if not outcome.agents:
            return RunsStopped(
                run_id=message.run_id, stopped=outcome.stopped, subtree=outcome.subtree
            )
        op_id = next(self._op_ids)
        self._ops[op_id] = _StopOp(
            run_id=message.run_id,
            stopped=outcome.stopped,
            subtree=outcome.subtree,
            reply=self.defer_reply(),
            waiting=set(outcome.agents),
        )
        self._ops[op_id].timer = self.call_later(message.wait, _StopExpired(op=op_id))
        self._terminate(outcome.agents)
        return None

    def _check_agent(self, agent: str) -> None:
        """Refuse an agent path the run manager could not terminate."""
        prefix = self._agents + "/"
        child_id = agent[len(prefix) :] if agent.startswith(prefix) else ""
        if not child_id or "/" in child_id:
            raise RunError(
                "InvalidAgentPath",
                f"agent path {agent!r} is not a child of the agents supervisor "
                f"{self._agents!r} (expected {prefix}<child id>)",
            )

    # --- Terminating agents -----------------------------------------------------------------

    def _terminate(self, agents: Iterable[str]) -> None:
        """Start terminating ``agents`` (those not already being terminated)."""
        fresh = [a for a in agents if a not in self._in_flight]
        if not fresh:
            return
        self._in_flight.update(fresh)
        self._listing[self.request(self._agents, WhichChildren())] = fresh
        if self._retry_timer is None:
            self._retry_timer = self.call_later(self._retry, _RetryTerminations())

    def _retry_terminations(self) -> None:
        """Ask again for every termination still in the outbox (in flight or not).

        A request may have been lost (an ErrorReply the host drops, a supervisor that was not
        there yet): asking again is safe, as an agent already gone is only reported as such.
        """
        self._retry_timer = None
        pending = self._store.pending_terminations()
        if pending:
            log.info("terminations_retried", actor=self.path, agents=pending)
            self._in_flight.difference_update(pending)
            self._terminate(pending)

    def on_reply(self, request_id: int, reply: Message) -> None:
        """A reply from the agents' supervisor: a children list or a termination."""
        agents = self._listing.pop(request_id, None)
        if agents is not None:
            self._on_children(agents, reply)
            return
        agent = self._terminating.pop(request_id, None)
        if agent is None:
            log.debug("reply_ignored", actor=self.path, kind=reply.kind)
        elif isinstance(reply, Ok):
            self._resolved(agent, "terminated")
        elif isinstance(reply, ErrorReply) and reply.error == ErrorName.CHILD_NOT_FOUND:
            self._resolved(agent, "already_gone")
        else:
            self._resolved(agent, "unconfirmed", _describe(reply))

    def _on_children(self, agents: list[str], reply: Message) -> None:
        if not isinstance(reply, Children):
            for agent in agents:
                self._resolved(agent, "unconfirmed", _describe(reply))
            return
        present = {child.id for child in reply.children}
        for agent in agents:
            child_id = agent.rsplit("/", 1)[-1]
            if child_id in present:
                rid = self.request(self._agents, TerminateChild(child_id=child_id))
                self._terminating[rid] = agent
            else:
                self._resolved(agent, "already_gone")

    def on_undelivered(self, path: str, messages: list[Message], reason: str) -> None:
        """The agents' supervisor was not there: the requests in flight to it are unconfirmed."""
        log.warning(
            "agents_supervisor_unreachable",
            actor=self.path,
            to=path,
            count=len(messages),
            reason=reason,
        )
        if path != self._agents:
            return
        why = f"{path} did not take the request: {reason}"
        lost_ids = {m.child_id for m in messages if isinstance(m, TerminateChild)}
        if any(isinstance(m, WhichChildren) for m in messages):
            for agents in self._listing.values():
                for agent in agents:
                    self._resolved(agent, "unconfirmed", why)
            self._listing.clear()
        for rid, agent in list(self._terminating.items()):
            if agent.rsplit("/", 1)[-1] in lost_ids:
                del self._terminating[rid]
                self._resolved(agent, "unconfirmed", why)

    def _resolved(self, agent: str, outcome: str, why: str = "") -> None:
        """Record the fate of one agent's termination; answer the StopRuns it completes."""
        self._in_flight.discard(agent)
        if outcome == "unconfirmed":
            log.warning("agent_termination_unconfirmed", actor=self.path, agent=agent, reason=why)
        else:
            self._store.commit([], terminated=[agent])
            log.info(
                f"agent_{outcome}",  # noqa: G004 - a structlog event name, not a format string
                actor=self.path,
                agent=agent,
            )
        for op_id, op in list(self._ops.items()):
            if agent not in op.waiting:
                continue
            op.waiting.discard(agent)
            if outcome == "terminated":
                op.terminated.append(agent)
            elif outcome == "already_gone":
                op.already_gone.append(agent)
            else:
                op.unconfirmed[agent] = why
            if not op.waiting:
                self._answer(op_id)

    def _expire(self, op_id: int) -> None:
        op = self._ops.get(op_id)
        if op is None:
            return
        for agent in sorted(op.waiting):
            op.unconfirmed[agent] = "no confirmation from the agents supervisor in time"
            self._in_flight.discard(agent)  # a later StopRun asks again; a late reply still counts
        op.waiting.clear()
        self._answer(op_id, expired=True)

    def _answer(self, op_id: int, *, expired: bool = False) -> None:
        op = self._ops.pop(op_id)
        if not expired:
            self.cancel_call(op.timer)
        op.reply(
            RunsStopped(
                run_id=op.run_id,
                stopped=op.stopped,
                subtree=op.subtree,
                terminated=op.terminated,
                already_gone=op.already_gone,
                unconfirmed=op.unconfirmed,
            )
        )


def _describe(reply: Message) -> str:
    if isinstance(reply, ErrorReply):
        return f"{reply.error}: {reply.message}"
    return f"unexpected reply {reply.kind!r}"


__all__ = ["RunManager", "RunStore", "StoreError"]
