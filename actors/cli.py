"""The ``understudy`` command line: up, validate, status, ask, stop.

``up`` starts the tree of a topology file, writes ``<state_dir>/runtime.json`` (its pid and
admin port) so that ``status``, ``ask`` and ``stop`` in other shells can find it, shows the
live tree, and on Ctrl-C or SIGTERM stops the tree in order and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import click
import psutil
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from actors.core.keyring import (
    SecretError,
    key_id,
    principal_key_path,
    read_key_file,
    retire_old_keys,
    rotate_key_file,
    secret_path,
)
from actors.core.runtime import Runtime, check_workers
from actors.errors import ActorNotFound, AskTimeout
from actors.experiments.cli import experiment
from actors.logs import configure_logging
from actors.model.endpoint import ModelEndpoint, resolve_model_endpoint
from protocols import codec
from protocols._base import Message, message_class
from protocols.cluster import HostInfo
from protocols.errors import TopologyError, UnderstudyError
from protocols.ledger import LedgerReport
from protocols.supervision import ChildInfo, SupervisionEvent
from protocols.topology import Topology
from protocols.topology_loader import load_topology

__all__ = ["main"]

console = Console()
err_console = Console(stderr=True)

STATE_FILE = "runtime.json"
DEFAULT_PRINCIPAL = "operator"


@dataclass
class Node:
    """One node of the live tree as the CLI shows it."""

    path: str
    info: ChildInfo | None
    children: list[Node] = field(default_factory=list)


def collect_tree(runtime: Runtime, root: str) -> Node:
    """Walk the live tree from ``root`` with which_children."""
    node = Node(root, None)
    for info in runtime.which_children(root, timeout=5.0):
        path = f"{root}/{info.id}"
        if info.type == "supervisor" and info.status == "running":
            child = collect_tree(runtime, path)
            child.info = info
        else:
            child = Node(path, info)
        node.children.append(child)
    return node


_STYLE = {"running": "green", "restarting": "yellow", "stopped": "red"}


def render_tree(node: Node, title: str) -> Tree:
    """Render a collected tree with each child's status, restart count and pid."""
    tree = Tree(f"[bold]{title}[/bold]")

    def add(branch: Tree, n: Node) -> None:
        for child in n.children:
            info = child.info
            assert info is not None  # noqa: S101 - children always carry their info
            style = _STYLE.get(info.status, "white")
            label = (
                f"{info.id} [dim]{info.type}, {info.restart}[/dim] "
                f"[{style}]{info.status}[/{style}] restarts={info.restarts}"
                + (f" pid={info.pid}" if info.pid else "")
                + (f" host={info.host}" if info.host else "")
                + (f" [yellow]({info.reason})[/yellow]" if info.reason else "")
            )
            add(branch.add(label), child)

    add(tree, node)
    return tree


def render_events(events: list[SupervisionEvent], limit: int = 8) -> Table:
    """Render the last ``limit`` supervision events."""
    table = Table(
        title="recent supervision events",
        title_justify="left",
        box=None,
        show_header=True,
        header_style="dim",
    )
    for col in ("seq", "time", "supervisor", "child", "event", "reason"):
        table.add_column(col)
    for event in events[-limit:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        table.add_row(
            str(event.seq),
            stamp,
            event.supervisor,
            event.child_id or "-",
            event.event,
            event.reason or "",
        )
    return table


def _view(runtime: Runtime, root: str, title: str) -> Group:
    return Group(
        render_tree(collect_tree(runtime, root), title), "", render_events(runtime.events())
    )


def _state_path(state_dir: str) -> Path:
    return Path(state_dir) / STATE_FILE


def _read_state(state_dir: str) -> dict[str, Any]:
    path = _state_path(state_dir)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(
            f"no running tree found ({path} is missing); start one with `understudy up`"
        ) from None
    if not psutil.pid_exists(int(state["pid"])):
        raise click.ClickException(
            f"the tree recorded in {path} (pid {state['pid']}) is not running any more"
        )
    return state


def _attach(state: dict[str, Any], state_dir: str) -> Runtime:
    """Connect to the tree recorded in ``state`` (``runtime.json``) with its secret, as the
    principal named by ``--as`` (``operator`` by default)."""
    context = click.get_current_context()
    principal = str((context.find_root().obj or {}).get("principal", DEFAULT_PRINCIPAL))
    try:
        return Runtime.attach(
            int(state["admin_port"]),
            secret_file=state["secret_file"],
            listen=state.get("listen", "127.0.0.1"),
            max_message_size=int(state.get("max_message_size", codec.DEFAULT_MAX_SIZE)),
            principal=principal,
            state_dir=state_dir,
        )
    except KeyError as exc:
        raise click.ClickException(
            f"runtime.json has no {exc.args[0]!r}: it was written by an older understudy; "
            "restart the tree"
        ) from None
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc


class _StopSignal:
    """SIGTERM / SIGINT as a flag the main loop waits on: a signal never interrupts a call on
    the runtime half way (which could leave its connection unusable for the shutdown)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.name = self.name or signal.Signals(signum).name
        self.event.set()


@click.group()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="structlog events shown on stderr",
)
@click.option("--json-logs", is_flag=True, help="log JSON lines instead of text")
@click.option(
    "--as",
    "principal",
    default=DEFAULT_PRINCIPAL,
    show_default=True,
    help="the principal (system.principals) that status, ask and run act as; its key is "
    "<state-dir>/principals/NAME.key",
)
@click.pass_context
def main(context: click.Context, log_level: str, json_logs: bool, principal: str) -> None:
    """Understudy: OTP-style supervision trees on Thespian."""
    configure_logging(log_level, json=json_logs)
    context.obj = {"principal": principal}


@main.command()
@click.argument("file", default="topology.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--duration",
    type=float,
    default=None,
    help="stop by itself after this many seconds (default: run until Ctrl-C/SIGTERM)",
)
@click.option(
    "--refresh",
    type=float,
    default=1.0,
    show_default=True,
    help="seconds between refreshes of the live tree",
)
@click.option(
    "--state-dir",
    default=None,
    help="where the tree keeps its state (default: the topology's system.state_dir)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics "
    "(default: the topology's system.metrics.port, else none)",
)
def up(
    file: str,
    duration: float | None,
    refresh: float,
    state_dir: str | None,
    metrics_port: int | None,
) -> None:
    """Start the tree of FILE (default topology.yaml) and show it live until stopped."""
    topology = _load(file)
    if state_dir is not None:
        system = topology.system.model_copy(update={"state_dir": state_dir})
        topology = topology.model_copy(update={"system": system})
    if metrics_port is not None:
        metrics = topology.system.metrics.model_copy(update={"port": metrics_port})
        system = topology.system.model_copy(update={"metrics": metrics})
        topology = topology.model_copy(update={"system": system})
    state_path = _state_path(topology.system.state_dir)
    if state_path.exists():
        try:
            _read_state(topology.system.state_dir)
        except click.ClickException:
            state_path.unlink()  # a stale file from a tree that is gone
        else:
            raise click.ClickException(
                f"a tree is already running from {state_path}; `understudy stop` it first"
            )
    stop = _StopSignal()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    endpoint, model_server = _configure_model(topology)
    try:
        runtime = Runtime.start(topology)
    except OSError as exc:
        if model_server is not None:
            model_server.stop()
        raise click.ClickException(
            f"cannot serve metrics on port {topology.system.metrics.port}: {exc}"
        ) from exc
    except UnderstudyError as exc:
        if model_server is not None:
            model_server.stop()
        raise click.ClickException(str(exc)) from exc
    metrics_port = topology.system.metrics.port
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "admin_port": runtime.admin_port,
                "base": runtime.base,
                "listen": runtime.listen,
                "secret_file": str(runtime.secret_file),
                "max_message_size": topology.system.max_message_size,
                "topology": str(Path(file).resolve()),
                "model_endpoint": endpoint.base_url,
                "model": endpoint.model,
                "metrics_url": metrics_url,
            }
        )
    )
    root = topology.root.id
    title = f"{root}  [dim]{topology.system.base} admin_port={runtime.admin_port}[/dim]"
    stopped_by = "duration"
    try:
        console.print(endpoint.describe(), markup=False, highlight=False, soft_wrap=True)
        if metrics_url is not None:
            console.print(f"metrics: {metrics_url}", markup=False, highlight=False)
        deadline = None if duration is None else time.monotonic() + duration
        live = console.is_terminal
        with (
            Live(_view(runtime, root, title), console=console, auto_refresh=False, transient=False)
            if live
            else _NoLive() as view
        ):
            if not live:
                console.print(render_tree(collect_tree(runtime, root), title))
                sys.stdout.flush()
            while deadline is None or time.monotonic() < deadline:
                wait = refresh if deadline is None else min(refresh, deadline - time.monotonic())
                if stop.event.wait(max(wait, 0.0)):
                    stopped_by = stop.name
                    break
                reason = runtime.exit_reason
                if reason is not None:
                    stopped_by = f"root exited: {reason}"
                    break
                if live:
                    view.update(_view(runtime, root, title), refresh=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runtime.shutdown()
        if model_server is not None:
            model_server.stop()
        state_path.unlink(missing_ok=True)
    console.print(f"stopped ({stopped_by}); exit reason: {runtime.exit_reason}")


def _configure_model(topology: Topology) -> tuple[ModelEndpoint, Any]:
    """Point agents at a model (``actors.model.endpoint`` says which) through the environment
    they inherit; start the embedded simulator only when nothing is configured.

    Returns:
        The endpoint in use, and the embedded server (None unless it was started here).
    """
    endpoint = resolve_model_endpoint(topology.system.model, os.environ)
    server = None
    if endpoint.embedded:
        from actors.model.server import ModelServer, quality_from_env

        try:
            quality, seed = quality_from_env(os.environ)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        server = ModelServer(quality=quality, seed=seed)
        endpoint = replace(endpoint, base_url=server.start())
    endpoint.export(os.environ)
    return endpoint, server


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object, **kwargs: object) -> None:
        """Nothing to update when the output is not a terminal."""


def _load(file: str) -> Topology:
    try:
        topology = load_topology(file)
        check_workers(topology)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc
    return topology


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check a topology file: schema, child ids, and that every worker class imports."""
    topology = _load(file)
    count = _count(topology.root)
    console.print(f"{file}: valid ({count} supervisors and workers under {topology.root.id!r})")


def _count(spec: Any) -> int:
    return sum(1 + (_count(c) if c.type == "supervisor" else 0) for c in spec.children)


def _flatten(node: Node) -> list[dict[str, Any]]:
    rows = []
    for child in node.children:
        info = child.info
        assert info is not None  # noqa: S101 - children always carry their info
        rows.append({"path": child.path, **info.model_dump(exclude={"kind", "id"})})
        rows += _flatten(child)
    return rows


@main.command()
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--ledger", "show_ledger", is_flag=True, help="also print the message ledger")
@click.option("--json", "as_json", is_flag=True, help="print hosts, children and events as JSON")
def status(state_dir: str, show_ledger: bool, as_json: bool) -> None:
    """Show the live tree of the running `understudy up`: status, restarts and host per child."""
    state = _read_state(state_dir)
    runtime = _attach(state, state_dir)
    try:
        tree = collect_tree(runtime, "root")
        ledger = runtime.ledger() if show_ledger else None
        hosts = runtime.hosts()
        events = runtime.events() if as_json else []
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        document: dict[str, Any] = {
            "hosts": [h.model_dump(exclude={"kind"}) for h in hosts],
            "children": _flatten(tree),
            "events": [e.model_dump(exclude={"kind"}) for e in events],
        }
        if ledger is not None:
            document["ledger"] = ledger.model_dump(exclude={"kind"})
        click.echo(json.dumps(document, indent=2))
        return
    if len(hosts) > 1:
        console.print(_hosts_table(hosts))
    console.print(
        render_tree(tree, f"root  [dim]pid={state['pid']} admin_port={state['admin_port']}[/dim]")
    )
    for line in _service_summaries(runtime):
        console.print(line)
    if ledger is not None:
        console.print(_ledger_table(ledger))


def _hosts_table(hosts: list[HostInfo]) -> Table:
    table = Table(title="hosts")
    for column in ("name", "status", "address", "capabilities", "children", "last seen"):
        table.add_column(column)
    now = time.time()
    for host in hosts:
        style = {"up": "green", "suspect": "yellow", "down": "red"}[host.status]
        seen = "-" if host.last_seen is None else f"{max(0.0, now - host.last_seen):.1f} s ago"
        table.add_row(
            host.name + (" (leader)" if host.leader else ""),
            f"[{style}]{host.status}[/{style}]",
            host.address,
            ", ".join(f"{k}={v}" for k, v in sorted(host.capabilities.items())) or "-",
            str(host.children),
            seen,
        )
    return table


@main.command()
@click.option("--state-dir", default=".understudy", show_default=True)
def metrics(state_dir: str) -> None:
    """Print the running tree's Prometheus metrics once (the text format; the price table is
    the topology's system.metrics.prices)."""
    state = _read_state(state_dir)
    runtime = _attach(state, state_dir)
    topology_file = Path(str(state.get("topology", "")))
    if topology_file.is_file():
        try:
            runtime.prices = dict(load_topology(topology_file).system.metrics.prices)
        except TopologyError as exc:
            err_console.print(f"no price table: {exc}")
    try:
        text = runtime.metrics_text()
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text, nl=False)


@main.command()
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the hosts as JSON")
def hosts(state_dir: str, as_json: bool) -> None:
    """List the hosts of the running tree's cluster and their status."""
    state = _read_state(state_dir)
    runtime = _attach(state, state_dir)
    try:
        found = runtime.hosts()
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([h.model_dump(exclude={"kind"}) for h in found], indent=2))
    else:
        console.print(_hosts_table(found))


@main.command()
@click.argument("leader")
@click.option("--name", required=True, help="this host's name (placement: {host: NAME})")
@click.option("--listen", default="127.0.0.1", show_default=True, help="the address to bind")
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    metavar="KEY=VALUE",
    help="a capability of this host, for placement (repeatable)",
)
@click.option("--secret-file", default=None, help="the deployment secret (the leader's)")
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--admin-port", type=int, default=None, help="this host's admin port (default: free)")
def join(
    leader: str,
    name: str,
    listen: str,
    capabilities: tuple[str, ...],
    secret_file: str | None,
    state_dir: str,
    admin_port: int | None,
) -> None:
    """Join this host to the cluster whose leader's admin is at LEADER (ADDRESS:PORT).

    Stays in the foreground until SIGTERM or Ctrl-C, then leaves and stops everything it ran.
    """
    from actors.cluster.member import JoinError, run_member

    caps: dict[str, str] = {}
    for item in capabilities:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--capability takes KEY=VALUE, got {item!r}"
            raise click.BadParameter(msg, param_hint="--capability")
        caps[key] = value
    try:
        run_member(
            leader=leader,
            name=name,
            listen=listen,
            capabilities=caps,
            secret_file=secret_file,
            state_dir=state_dir,
            admin_port=admin_port,
        )
    except JoinError as exc:
        raise click.ClickException(str(exc)) from exc


def _ledger_table(ledger: LedgerReport) -> Table:
    """The ledger, one row per actor and per message kind, then the total."""
    events = ("sent", "delivered", "handled", "undelivered", "dead_lettered", "rejected")
    verdict = "balanced" if ledger.balanced else "NOT balanced"
    caption = f"{verdict}; {ledger.unreported} incarnation(s) killed without reporting"
    table = Table(title="message ledger", caption=caption)
    table.add_column("actor / kind", overflow="fold")
    for event in events:
        table.add_column(event, justify="right")
    rows = [*ledger.by_actor.items(), *(("kind " + k, c) for k, c in ledger.by_kind.items())]
    for name, counts in [*rows, ("total", ledger.total)]:
        table.add_row(name, *(str(getattr(counts, event)) for event in events))
    return table


# What `status` asks each of Understudy's own services for, and how it shows the answer.
def _service_summaries(runtime: Runtime) -> list[str]:
    from protocols.access import AuditStatistics, GetAuditStats
    from protocols.registry import GetRegistryStatistics, RegistryStatistics
    from protocols.runs import GetRunStatistics, RunStatistics
    from protocols.scheduler import GetStatistics, SchedulerStatistics

    lines: list[str] = []
    probes: list[tuple[str, Message, Callable[[Message], str]]] = [
        (
            "root/system/access",
            GetAuditStats(),
            lambda r: (
                f"audit log: {r.entries} entries, last hash {r.last_hash[:16]}, "
                f"{r.problems_at_start} problems at start, {r.subjects} subjects ({r.path})"
                if isinstance(r, AuditStatistics)
                else str(r)
            ),
        ),
        (
            "root/system/scheduler",
            GetStatistics(),
            lambda r: "scheduler: " + r.summary() if isinstance(r, SchedulerStatistics) else str(r),
        ),
        (
            "root/system/runs",
            GetRunStatistics(),
            lambda r: (
                f"runs: {r.running} running, {r.stopped} stopped, {r.completed} completed, "
                f"{r.failed} failed ({r.total} total), {r.pending_terminations} agent "
                "terminations pending"
                if isinstance(r, RunStatistics)
                else str(r)
            ),
        ),
        (
            "root/system/registry",
            GetRegistryStatistics(),
            lambda r: "registry: " + r.summary() if isinstance(r, RegistryStatistics) else str(r),
        ),
    ]
    for path, request, show in probes:
        try:
            reply = runtime.ask(path, request, timeout=5.0)
        except ActorNotFound:
            continue
        except UnderstudyError as exc:
            lines.append(f"{path}: {exc}")
            continue
        lines.append(f"{path}: {show(reply)}")
    return lines


@main.command()
@click.argument("path")
@click.argument("kind")
@click.argument("body", default="{}")
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--timeout", type=float, default=5.0, show_default=True)
def ask(path: str, kind: str, body: str, state_dir: str, timeout: float) -> None:
    """Send a message of KIND with a JSON BODY to the actor at PATH and print the reply."""
    import actors.demo  # noqa: F401 - registers the demo kinds
    import protocols.access
    import protocols.registry
    import protocols.runs
    import protocols.scheduler  # noqa: F401

    cls = message_class(kind)
    if cls is None:
        raise click.ClickException(f"unknown message kind {kind!r}")
    try:
        message = cls.model_validate(json.loads(body))
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"invalid {kind} body: {exc}") from exc
    state = _read_state(state_dir)
    runtime = _attach(state, state_dir)
    try:
        reply = runtime.ask(path, message, timeout=timeout)
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print_json(reply.model_dump_json())


@main.command()
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True)
def stop(state_dir: str, timeout: float) -> None:
    """Stop the running `understudy up` (as SIGTERM would) and wait until it is gone."""
    state = _read_state(state_dir)
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired as exc:
        raise click.ClickException(
            f"`understudy up` (pid {pid}) still running after {timeout} s"
        ) from exc
    console.print(f"stopped understudy up (pid {pid})")


@main.command()
@click.argument("goal")
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option("--workspace", default=None, help="absolute path (default: a fresh one per run)")
@click.option("--criterion", "criteria", multiple=True, help="an acceptance criterion (repeat)")
@click.option(
    "--subtask",
    "subtasks",
    multiple=True,
    help="run this part in parallel with the others (repeat)",
)
@click.option("--evolutions", type=int, default=2, show_default=True)
@click.option("--threshold", type=float, default=1.0, show_default=True)
@click.option(
    "--max-time",
    type=float,
    default=None,
    help="maximum execution time of each agent run, seconds (0: unlimited; "
    "default: the deployment's)",
)
@click.option(
    "--priority",
    type=click.Choice(["critical", "high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="the priority of the run's scheduler tasks",
)
@click.option("--timeout", type=float, default=600.0, show_default=True)
@click.option("--no-interview", is_flag=True, help="skip the interview: run GOAL as given")
@click.option(
    "--answer",
    "answers",
    multiple=True,
    help="the answer to the interview's next question, in order (repeat; for a stdin that "
    "is not a terminal)",
)
def run(
    goal: str,
    state_dir: str,
    workspace: str | None,
    criteria: tuple[str, ...],
    subtasks: tuple[str, ...],
    evolutions: int,
    threshold: float,
    max_time: float | None,
    priority: str,
    timeout: float,
    no_interview: bool,
    answers: tuple[str, ...],
) -> None:
    """Run GOAL on the running `understudy up` and show its progress as it happens.

    The model first interviews GOAL: a message that is not a task is answered directly, and
    an ambiguous one gets clarifying questions, asked here (or answered by --answer).
    Ctrl-C stops the run (its agents, phases and model calls) and shows it as stopped.
    """
    from protocols.orchestrator import (
        CancelRun,
        ChatReply,
        RunAccepted,
        RunGoalRequest,
        RunOutcome,
    )

    state = _read_state(state_dir)
    runtime = _attach(state, state_dir)
    request = RunGoalRequest(
        goal=goal,
        workspace=workspace and str(Path(workspace).resolve()),
        criteria=list(criteria),
        subtasks=list(subtasks),
        evolutions=evolutions,
        threshold=threshold,
        max_execution_time=max_time,
        interview=not no_interview,
        priority=priority,
    )
    try:
        reply = runtime.ask("root/orchestrator", request, timeout=INTERVIEW_TIMEOUT)
    except UnderstudyError as exc:
        raise click.ClickException(str(exc)) from exc
    accepted = _interview(runtime, reply, list(answers))
    if isinstance(accepted, ChatReply):
        console.print(accepted.reply)
        return
    assert isinstance(accepted, RunAccepted)  # noqa: S101 - the orchestrator's answer
    if accepted.goal is not None and accepted.goal != goal:
        console.print(f"goal: {accepted.goal}")
    console.print(f"run {accepted.run_id} (workspace {accepted.workspace})")
    deadline = time.monotonic() + timeout
    # Each event is printed as it happens (a long poll held by the orchestrator).
    events = runtime.run_events(accepted.run_id, timeout=timeout)
    try:
        for event in events:
            console.print(_describe_event(event))
            if time.monotonic() > deadline:
                break
    except AskTimeout:
        events.close()  # nothing happened for --timeout seconds: reported below as running
    except UnderstudyError as exc:
        raise click.ClickException(f"lost run {accepted.run_id}: {exc}") from exc
    except KeyboardInterrupt:
        console.print(f"stopping run {accepted.run_id} ...")
        stopped = runtime.ask("root/orchestrator", CancelRun(run_id=accepted.run_id), timeout=60)
        if isinstance(stopped, RunOutcome):
            console.print(f"[bold]{stopped.status}[/bold]: {stopped.error or ''}")
        raise SystemExit(130) from None
    outcome = events.outcome
    if outcome is None:
        raise click.ClickException(f"run {accepted.run_id} still running after {timeout} s")
    result = outcome.result
    console.print(
        f"[bold]{'succeeded' if outcome.success else outcome.status}[/bold] "
        f"score {outcome.score:.2f} (attempts: {outcome.scores})"
    )
    if result is not None:
        console.print(f"output: {result.output}", markup=False)
        for path in result.files:
            console.print(f"file: {path}", markup=False)
        console.print(f"tokens: {result.usage.input_tokens} in, {result.usage.output_tokens} out")
    for criterion in outcome.unmet:
        console.print(f"unmet: {criterion}", markup=False)
    for criterion in outcome.unverified:
        console.print(f"unverified: {criterion}", markup=False)
    if not outcome.success:
        if outcome.error:
            console.print(f"why: {outcome.error}", markup=False)
        raise SystemExit(1)


INTERVIEW_TIMEOUT = 200.0
"""Seconds to wait for one interview round (the orchestrator's model call, with retries)."""


def _interview(runtime: Runtime, reply: Message, answers: list[str]) -> Message:
    """Answer the orchestrator's clarifying questions (on the terminal, else from
    ``answers``) until it accepts the run or replies directly; return that answer."""
    from protocols.orchestrator import AnswerQuestions, ClarifyingQuestions

    while isinstance(reply, ClarifyingQuestions):
        given: list[str] = []
        for question in reply.questions:
            if answers:
                given.append(answers.pop(0))
                console.print(f"[bold]?[/bold] {question} [dim]{given[-1]}[/dim]")
            elif sys.stdin.isatty():
                given.append(str(click.prompt(question)))
            else:
                msg = (
                    f"the interview asks: {question!r}, and stdin is not a terminal; "
                    "give the answers with --answer TEXT (once per question, in order) "
                    "or skip the interview with --no-interview"
                )
                raise click.ClickException(msg)
        try:
            reply = runtime.ask(
                "root/orchestrator",
                AnswerQuestions(session_id=reply.session_id, answers=given),
                timeout=INTERVIEW_TIMEOUT,
            )
        except UnderstudyError as exc:
            raise click.ClickException(str(exc)) from exc
    return reply


def _describe_event(event: Any) -> str:
    """One line per event; an agent's progress is named by its step (model_call_started,
    model_call, tool_call_started, tool_call, ...)."""
    what, shown = event.what, dict(event.detail)
    if what == "progress" and "step" in shown and isinstance(shown["step"], str):
        what = shown.pop("step")
    detail = ", ".join(
        f"{k}={round(v, 3) if isinstance(v, float) else v}"
        for k, v in shown.items()
        if v not in (None, [], "")
    )
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    return f"[dim]{stamp}[/dim] {event.phase} {what}" + (f": {detail}" if detail else "")


@main.command("model-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=int, default=0, show_default=True, help="0: a free port")
@click.option("--api-key", default=None, help="require this bearer token")
@click.option(
    "--context-window",
    type=int,
    default=None,
    help="reject prompts estimated above this many tokens",
)
@click.option(
    "--quality",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="how well it writes, 0 to 1: below 1 a write misses each of its criteria with "
    "probability 1 - quality (seeded) [default: $UNDERSTUDY_MODEL_QUALITY, else 1]",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="the seed of quality's draws [default: $UNDERSTUDY_MODEL_SEED, else 0]",
)
def model_server(
    host: str,
    port: int,
    api_key: str | None,
    context_window: int | None,
    quality: float | None,
    seed: int | None,
) -> None:
    """Serve the deterministic OpenAI-compatible model until Ctrl-C or SIGTERM.

    Prints the base URL (for openai.OpenAI(base_url=...)) on stdout.
    """
    from actors.model.server import quality_from_env, serve_forever

    try:
        env_quality, env_seed = quality_from_env(os.environ)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    serve_forever(
        host,
        port,
        ready=click.echo,
        api_key=api_key,
        context_window=context_window,
        quality=env_quality if quality is None else quality,
        seed=env_seed if seed is None else seed,
    )


@main.group()
def secret() -> None:
    """Rotate the deployment secret (or a principal's key) without downtime."""


def _key_file(state_dir: str, principal: str | None, file: str | None) -> Path:
    if file is not None:
        return Path(file)
    if principal is not None:
        return principal_key_path(state_dir, principal)
    state = _state_path(state_dir)
    if state.exists():
        return Path(json.loads(state.read_text())["secret_file"])
    return secret_path(None, state_dir)


_KEY_FILE_OPTIONS = [
    click.option("--state-dir", default=".understudy", show_default=True),
    click.option("--principal", default=None, help="rotate this principal's key instead"),
    click.option("--file", default=None, help="the key file (default: the running tree's secret)"),
]


def _key_file_options(command: Any) -> Any:
    for option in reversed(_KEY_FILE_OPTIONS):
        command = option(command)
    return command


@secret.command("rotate")
@_key_file_options
def secret_rotate(state_dir: str, principal: str | None, file: str | None) -> None:
    """Step 1: put a new key first; the old ones stay accepted until `secret retire`."""
    path = _key_file(state_dir, principal, file)
    try:
        keys = rotate_key_file(path)
    except SecretError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"{path}: new current key {key_id(keys[0])}; still accepted: "
        f"{', '.join(key_id(k) for k in keys[1:])}. Every process picks it up within a "
        "second of its next message; then run `understudy secret retire`."
    )


@secret.command("retire")
@_key_file_options
def secret_retire(state_dir: str, principal: str | None, file: str | None) -> None:
    """Step 2: keep only the current key; frames under the old ones are refused from now on."""
    path = _key_file(state_dir, principal, file)
    try:
        old = retire_old_keys(path)
    except SecretError as exc:
        raise click.ClickException(str(exc)) from exc
    retired = ", ".join(key_id(k) for k in old) or "none"
    console.print(f"{path}: retired keys: {retired}")


@main.group()
def schema() -> None:
    """The JSON Schemas of topology.yaml and of each protocol's messages."""


@schema.command("topology")
@click.option(
    "--write",
    "write",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="PATH",
    help="write the schema to PATH (default: protocols/schemas/topology.schema.json)",
)
def schema_topology(write: str | None) -> None:
    """Print the topology JSON Schema, or write it with --write."""
    from protocols.topology_loader import SCHEMA_PATH, render_topology_json_schema

    _emit_schema(render_topology_json_schema(), write, SCHEMA_PATH)


def _emit_schema(text: str, write: str | None, default: Path) -> None:
    """Print a schema, or write it to ``write`` (``default`` when given without a path)."""
    if write is None:
        click.echo(text, nl=False)
        return
    target = Path(write) if write else default
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {target}")


@schema.command("experiment")
@click.option(
    "--write",
    "write",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="PATH",
    help="write the schema to PATH (default: protocols/schemas/experiment.schema.json)",
)
def schema_experiment(write: str | None) -> None:
    """Print the experiment-file JSON Schema, or write it with --write."""
    from protocols.experiment_loader import EXPERIMENT_SCHEMA_PATH, render_experiment_json_schema

    _emit_schema(render_experiment_json_schema(), write, EXPERIMENT_SCHEMA_PATH)


@schema.command("protocols")
@click.argument("module", required=False)
@click.option(
    "--write",
    "write",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="DIR",
    help="write <module>.schema.json for every protocol (default: protocols/schemas)",
)
def schema_protocols(module: str | None, write: str | None) -> None:
    """Print one protocol's JSON Schema (MODULE: e.g. scheduler), or write them all."""
    from protocols.schemas_gen import PROTOCOL_MODULES, SCHEMA_DIR, render, schema_path

    if write is not None:
        target_dir = Path(write) if write else SCHEMA_DIR
        target_dir.mkdir(parents=True, exist_ok=True)
        for module_name in PROTOCOL_MODULES:
            target = target_dir / schema_path(module_name).name
            target.write_text(render(module_name), encoding="utf-8")
            click.echo(f"wrote {target}")
        return
    if module is None:
        raise click.UsageError("give a protocol module to print, or --write")
    module_name = module if "." in module else f"protocols.{module}"
    if module_name not in PROTOCOL_MODULES:
        known = ", ".join(name.removeprefix("protocols.") for name in PROTOCOL_MODULES)
        raise click.BadParameter(
            f"unknown protocol {module!r}; known: {known}", param_hint="MODULE"
        )
    click.echo(render(module_name), nl=False)


@main.group()
def audit() -> None:
    """The access manager's hash-chained audit log."""


@audit.command("verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--state-dir", default=".understudy", show_default=True)
@click.option(
    "--head",
    default=None,
    metavar="N:HASH",
    help="entries and last hash seen earlier (from `understudy status`): also "
    "detects entries removed from the end",
)
@click.option(
    "--secret-file",
    default=None,
    help="the deployment secret the log is keyed with (default: the running tree's, else "
    "$UNDERSTUDY_SECRET_FILE, else <state-dir>/secret)",
)
def audit_verify(
    file: str | None, state_dir: str, head: str | None, secret_file: str | None
) -> None:
    """Check every entry's keyed hash chain; name the line of any edited, removed, inserted
    or reordered entry, and fail a log rewritten without the secret. FILE defaults to
    <state-dir>/audit.jsonl."""
    from actors.services.access_audit import verify_audit_log

    path = Path(file) if file else Path(state_dir) / "audit.jsonl"
    if not path.exists():
        raise click.ClickException(f"no audit log at {path}")
    try:
        keys = read_key_file(_key_file(state_dir, None, secret_file))
    except SecretError as exc:
        raise click.ClickException(f"cannot verify without the deployment secret: {exc}") from exc
    known: tuple[int, str] | None = None
    if head is not None:
        count, _, digest = head.partition(":")
        if not count.isdigit() or not digest:
            raise click.ClickException(f"--head must be N:HASH, got {head!r}")
        known = (int(count), digest)
    result = verify_audit_log(path, keys=keys, head=known)
    for index, problem in result.problems:
        console.print(f"line {index}: {problem}")
    if not result.ok:
        raise click.ClickException(
            f"{path}: {len(result.problems)} problem(s) in {result.entries} entries"
        )
    console.print(f"{path}: ok, {result.entries} entries, chain intact")


main.add_command(experiment)

if __name__ == "__main__":
    sys.exit(main())
