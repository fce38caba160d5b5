"""Run an experiment: start its tree, probe, drive the workload while the faults are injected on
their schedule, heal, probe again, check the invariants, stop the tree, write the reports.

One loop runs everything in the order of its scheduled time (workload operations, injections,
heals, probes during the fault phase, recovery watches): an action due while another runs
waits for it, so the order of actions, and on simpleSystemBase the whole run, depends only on
the file and its seed. Whatever happens, every fault is healed and the tree stopped at the end.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import json
import os
import platform
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import psutil
import structlog

from actors.core.fault_points import pick_paths
from actors.core.keyring import create_key_file
from actors.core.runtime import Runtime
from actors.core.worker import WORKER_PROCESS_NAME
from actors.errors import ActorExited, ActorNotFound, AskTimeout
from actors.experiments import invariants as inv
from actors.experiments.hosts import HostLab, lab_unavailable
from actors.experiments.plan import Injection, is_lasting, plan_faults
from actors.experiments.report import write_reports
from actors.model.endpoint import resolve_model_endpoint
from actors.model.proxy import FaultProxy
from actors.model.server import ModelServer
from protocols._base import Message
from protocols.errors import UnderstudyError
from protocols.experiment import (
    ActorFaultStep,
    AnswersProbe,
    ChildrenProbe,
    Experiment,
    FaultStep,
    GoalsWorkload,
    HostFaultStep,
    LlmFaultStep,
    MessageFaultStep,
    MessagesWorkload,
    Probe,
    PythonProbe,
    PythonWorkload,
    TasksWorkload,
    UserInvariant,
    Workload,
)
from protocols.experiment_loader import LoadedExperiment, build_message, resolve_call
from protocols.faults import ActorFault
from protocols.ledger import GetLedger
from protocols.orchestrator import GetRunProgress, RunAccepted, RunGoalRequest, RunProgress
from protocols.scheduler import CompleteTask, ListTasks, StartTask, SubmitTask, Tasks
from protocols.topology import ChildSpec, ModelConfig, SupervisorSpec, Topology

__all__ = ["ExperimentResult", "ExperimentRunner", "ProgressCallback", "RunContext"]

log = structlog.get_logger(__name__)

Status = Literal["completed", "deviated", "aborted"]
ProgressCallback = Callable[[str, float], None]
"""Called with a line saying what the run does now, and the fraction of it done (0..1)."""

_RECOVERY_POLL = 0.01
_RECOVERY_LIMIT = 15.0
_ORPHAN_CHECK_EVERY = 1.0
_EXIT_WAIT = 5.0
_RUN_POLL = 0.5
_CLIENT_POLL = 0.05
"""Seconds the loop waits, with nothing scheduled, for an operation in flight to finish."""


class _Clients:
    """The workload's clients: on a base with a process per actor, each workload has
    ``concurrency`` threads of its own (a Runtime asks from several threads at once), so an
    operation that waits holds up neither the faults, the probes nor other workloads; on
    simpleSystemBase operations run in the loop, one at a time (the run stays deterministic)."""

    def __init__(self, workloads: list[Workload], *, concurrent: bool) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._futures: list[Future[object]] = []
        if concurrent:
            for index, workload in enumerate(workloads):
                name = workload.name or f"{workload.kind}-{index}"
                self._pools[name] = ThreadPoolExecutor(
                    workload.concurrency, thread_name_prefix=f"client-{name}"
                )

    def run(self, name: str, operation: Callable[[], object]) -> None:
        """Make ``operation`` now (no pools) or on a free client of workload ``name``."""
        pool = self._pools.get(name)
        if pool is None:
            operation()
            return
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(pool.submit(operation))

    def busy(self) -> bool:
        return any(not f.done() for f in self._futures)

    def cancel_queued(self) -> int:
        """Cancel the operations still waiting for a client; how many there were."""
        cancelled = sum(1 for f in self._futures if f.cancel())
        self._futures = [f for f in self._futures if not f.cancelled()]
        return cancelled

    def close(self) -> int:
        """Cancel the operations still queued, wait for those in flight (each bounded by its
        own timeout); how many were cancelled."""
        cancelled = self.cancel_queued()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        return cancelled


_RUN_GRACE = 5.0


@dataclass
class ExperimentResult:
    status: Status
    exit_code: int
    journal: dict[str, Any]
    paths: list[Path] = field(default_factory=list)


@dataclass
class RunContext:
    """What a ``python`` workload, probe or invariant gets: the runtime, the experiment, and
    the seconds since the run started."""

    runtime: Runtime
    experiment: Experiment
    started: float

    @property
    def now(self) -> float:
        return time.monotonic() - self.started


class _Abort(Exception):
    """The experiment could not run on (the tree could not start, an injection failed)."""


class ExperimentRunner:
    """Runs one loaded experiment (see the module doc)."""

    def __init__(
        self,
        loaded: LoadedExperiment,
        *,
        seed: int | None = None,
        out: str | os.PathLike[str] | None = None,
        replay: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        experiment = loaded.experiment
        if seed is not None:
            experiment = experiment.model_copy(update={"seed": seed})
        self.loaded = loaded
        self.experiment = experiment
        base = Path(loaded.file).resolve().parent
        self.out = Path(out) if out is not None else base / experiment.report.out
        self._replay = Path(replay) if replay is not None else None
        self._progress = progress or (lambda _line, _fraction: None)
        self._history: list[dict[str, Any]] = []
        self._ops = itertools.count(1)
        self._faults: list[dict[str, Any]] = []
        self._injections: list[dict[str, Any]] = []
        self._recoveries: list[dict[str, Any]] = []
        self._probes: list[dict[str, Any]] = []
        self._known_pids: set[int] = set()
        self._suspects: set[int] = set()
        self._strays: list[dict[str, Any]] = []
        self._orphan_checks = 0
        self._started = 0.0
        self._wall_started = 0.0
        self._active: dict[int, list[str]] = {}
        self._lab: HostLab | None = None
        """The member hosts, when the experiment has any."""
        self._skipped = 0
        self._history_lock = threading.Lock()
        self._model: ModelServer | None = None
        self._proxy: FaultProxy | None = None
        self._saved_env: dict[str, str | None] = {}
        self._model_log: list[dict[str, Any]] = []
        self._pending_runs: dict[int, tuple[str, GoalsWorkload, dict[str, Any], float]] = {}
        self._at: Callable[[float, Callable[[], object]], None] = lambda _when, _action: None
        self._state: Path | None = None
        self._host_faults = itertools.count(1)

    # --- The plan --------------------------------------------------------------------------

    def plan(self) -> list[Injection]:
        """The injections this run makes: planned from the file and seed, or read from the
        journal given to ``replay``."""
        if self._replay is None:
            return plan_faults(self.experiment)
        return _replayed(self._replay, self.experiment)

    # --- The run ---------------------------------------------------------------------------

    def run(self) -> ExperimentResult:
        """Run the experiment and write its reports; never raises for a failure of the tree
        (that is a deviation or an abort, in the result)."""
        experiment = self.experiment
        self._started = time.monotonic()
        self._wall_started = time.time()
        journal: dict[str, Any] = self._journal_head()
        runtime: Runtime | None = None
        status: Status = "completed"
        abort_reason: str | None = None
        verdicts: dict[str, inv.Verdict] = {}
        events: list[Any] = []
        ledger: dict[str, Any] = {}
        try:
            plan = self.plan()
            self._progress("starting the tree", 0.0)
            runtime = self._start()
            context = RunContext(runtime, experiment, self._started)
            self._note_pids(runtime)
            self._progress("steady state before the faults", 0.02)
            before_ok = self._check_probes(runtime, context, "before")
            if not before_ok:
                status = "deviated"
                abort_reason = "the steady state did not hold before any fault"
            else:
                self._fault_phase(runtime, context, plan)
                self._progress("healing and waiting for the tree to settle", 0.9)
                self._close_active()
                gone = runtime.exit_reason
                if gone is None:
                    runtime.faults.heal_all()
                    self._settle(runtime)
                    self._check_probes(runtime, context, "after")
                else:
                    self._tree_gone(gone)
            events = runtime.events()
            ledger = self._ledger(runtime)
            if runtime.exit_reason is None:
                self._add_hits(runtime)
            verdicts = self._verdicts(runtime, context, events, ledger)
        except (_Abort, UnderstudyError, OSError) as exc:
            status, abort_reason = "aborted", f"{type(exc).__name__}: {exc}"
            log.error("experiment_aborted", title=experiment.title, reason=abort_reason)
        finally:
            if runtime is not None:
                self._stop(runtime)
        if runtime is not None and "no_orphans" in self._names():
            verdicts["no_orphans"] = inv.no_orphans(self._strays, self._orphan_checks)
        if status == "completed" and (
            any(not v.ok for v in verdicts.values()) or any(not p["ok"] for p in self._probes)
        ):
            status = "deviated"
        journal.update(
            status=status,
            abort_reason=abort_reason,
            elapsed=round(time.monotonic() - self._started, 3),
            steady_state=self._probes,
            faults=self._faults,
            injections=self._injections,
            invariants={name: v.as_json() for name, v in verdicts.items()},
            ledger=ledger,
            recoveries=self._recoveries,
            events=[self._event_json(e, self._wall_started) for e in events],
            workload=self._workload_summary(),
            model_requests=self._model_log,
        )
        self._progress("writing the reports", 0.98)
        paths = write_reports(self.out, journal, self._history, self.experiment.report.formats)
        code = {"completed": 0, "deviated": 1, "aborted": 2}[status]
        log.info("experiment_done", title=experiment.title, status=status, out=str(self.out))
        self._progress(f"done: {status}", 1.0)
        return ExperimentResult(status, code, journal, paths)

    def _journal_head(self) -> dict[str, Any]:
        experiment = self.experiment
        return {
            "title": experiment.title,
            "status": "aborted",
            "seed": experiment.seed,
            "file": self.loaded.file,
            "replay": str(self._replay) if self._replay else None,
            "versions": {
                "understudy": _version("understudy"),
                "thespian": _version("thespian"),
                "python": platform.python_version(),
            },
            "base": self.loaded.topology.system.base,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration": experiment.duration,
        }

    def _start(self) -> Runtime:
        experiment = self.experiment
        topology = self.loaded.topology
        state = Path(tempfile.mkdtemp(prefix="understudy-experiment-"))
        self._state = state
        system = topology.system.model_copy(update={"state_dir": str(state), "admin_port": None})
        secret = state / "secret"
        if experiment.hosts:
            unavailable = lab_unavailable(experiment.network)
            if unavailable is not None:
                raise _Abort(f"the experiment's hosts cannot run here: {unavailable}")
            lab = HostLab(
                experiment.hosts,
                network=experiment.network,
                state_dir=state / "hosts",
            )
            self._lab = lab
            lab.prepare()
            create_key_file(secret)
            cluster = system.cluster.model_copy(update={"secret_file": str(secret)})
            system = system.model_copy(
                update={
                    "listen": lab.leader_listen(),
                    "base": "multiprocTCPBase",
                    "cluster": cluster,
                }
            )
        self._start_model(system.model)
        topology = Topology(system=system, root=topology.root)
        try:
            runtime = Runtime.start(topology)
        except UnderstudyError as exc:
            raise _Abort(f"the tree did not start: {exc}") from None
        if self._lab is not None:
            assert runtime.admin_port is not None  # noqa: S101 - a multiprocTCPBase tree
            try:
                self._lab.join_all(runtime.admin_port, secret, runtime=runtime)
            except UnderstudyError as exc:
                runtime.shutdown()
                raise _Abort(f"the hosts did not join: {exc}") from None
        return runtime

    def _start_model(self, configured: ModelConfig | None) -> None:
        """Goals and model faults need a model: ``actors.model.endpoint`` decides which (the
        embedded one, started here, only when nothing is configured). Model faults on a real
        endpoint go through the fault-injecting proxy started in front of it. Agents inherit
        the environment set here; it is restored at the end."""
        experiment = self.experiment
        needs = any(isinstance(w, GoalsWorkload) for w in experiment.workload)
        faults = any(isinstance(f, LlmFaultStep) for f in experiment.faults)
        if not (needs or faults):
            return
        keys = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "UNDERSTUDY_MODEL")
        self._saved_env = {k: os.environ.get(k) for k in keys}
        endpoint = resolve_model_endpoint(configured, os.environ)
        if endpoint.embedded:
            self._model = ModelServer(quality=experiment.model_quality, seed=experiment.seed)
            endpoint = replace(endpoint, base_url=self._model.start())
        elif faults:
            assert endpoint.base_url is not None  # noqa: S101 - only the embedded one has none
            self._proxy = FaultProxy(endpoint.base_url)
            endpoint = replace(endpoint, base_url=self._proxy.start())
        endpoint.export(os.environ)
        log.info("model_endpoint", source=endpoint.source, base_url=endpoint.base_url)

    def _stop_model(self) -> None:
        if self._model is not None:
            self._model.stop()
        if self._proxy is not None:
            self._proxy.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _stop(self, runtime: Runtime) -> None:
        with contextlib.suppress(Exception):
            runtime.faults.heal_all(timeout=5.0)  # resumes every paused process too
        self._note_pids(runtime)
        try:
            runtime.shutdown()
        except Exception as exc:  # noqa: BLE001 - the run's result stands; say it did not stop
            log.error("experiment_stop_failed", error=str(exc))
        if self._lab is not None:
            self._lab.stop()
        self._stop_model()
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)
        self._check_orphans(after=True)

    # --- The fault phase ---------------------------------------------------------------------

    def _fault_phase(self, runtime: Runtime, context: RunContext, plan: list[Injection]) -> None:
        experiment = self.experiment
        queue: list[tuple[float, int, Callable[[], object]]] = []
        seq = itertools.count()
        wake = threading.Condition()

        def at(when: float, action: Callable[[], object]) -> None:
            with wake:
                heapq.heappush(queue, (when, next(seq), action))
                wake.notify()

        self._at = at

        for index, workload in enumerate(experiment.workload):
            self._schedule_workload(at, runtime, context, index, workload)
        for injection in plan:
            at(injection.at, functools.partial(self._inject, at, runtime, injection))
        for probe in experiment.steady_state:
            if probe.during:
                t = probe.interval
                while t < experiment.duration:
                    at(t, functools.partial(self._probe_once, runtime, context, probe, "during"))
                    t += probe.interval
        if runtime.base == "multiprocTCPBase":
            t = _ORPHAN_CHECK_EVERY
            while t < experiment.duration:
                at(t, functools.partial(self._note_pids, runtime))
                t += _ORPHAN_CHECK_EVERY
        clients = _Clients(experiment.workload, concurrent=runtime.base != "simpleSystemBase")
        phase_start = time.monotonic()
        self._phase_start = phase_start
        last_report = -1.0
        try:
            while True:
                if time.monotonic() - phase_start >= experiment.duration:
                    self._skipped += clients.cancel_queued()  # due, but no client was free
                with wake:
                    if not queue:
                        if not clients.busy():
                            break
                        wake.wait(_CLIENT_POLL)  # an operation in flight may schedule more
                        continue
                    when = queue[0][0]
                    delay = phase_start + when - time.monotonic()
                    if delay > 0:
                        wake.wait(delay)  # the loop's clock; woken early by a new action
                        continue
                    when, _, action = heapq.heappop(queue)
                if when >= experiment.duration and not _is_heal(action):
                    continue
                late = time.monotonic() - phase_start >= experiment.duration
                operation = isinstance(action, functools.partial) and action.func == self._operate
                if operation and late:
                    self._skipped += 1  # the phase is over: operations still due are not made
                    continue
                if operation:
                    assert isinstance(action, functools.partial)  # noqa: S101 - checked above
                    clients.run(action.args[2], action)
                else:
                    action()
                if when - last_report >= 0.5:
                    last_report = when
                    done = min(1.0, when / experiment.duration)
                    self._progress(
                        f"fault phase {when:5.1f}/{experiment.duration:g} s, "
                        f"{len(self._injections)} injection(s)",
                        0.05 + 0.85 * done,
                    )
        finally:
            self._skipped += clients.close()

    def _t(self) -> float:
        return round(time.monotonic() - self._started, 4)

    def _record(self, process: str, kind: str, f: str, value: Any, **extra: Any) -> int:
        with self._history_lock:  # operations are recorded from their clients' threads
            return self._append(process, kind, f, value, **extra)

    def _append(self, process: str, kind: str, f: str, value: Any, **extra: Any) -> int:
        op = extra.pop("op", None) or next(self._ops)
        entry = {
            "index": len(self._history),
            "op": op,
            "time": self._t(),
            "process": process,
            "type": kind,
            "f": f,
            "value": value,
            **extra,
        }
        self._history.append(entry)
        return int(op)

    # --- Faults ------------------------------------------------------------------------------

    def _inject(
        self,
        at: Callable[[float, Callable[[], object]], None],
        runtime: Runtime,
        injection: Injection,
    ) -> None:
        step = injection.step
        now = self._t()
        if runtime.exit_reason is not None:
            self._record("nemesis", "info", step.kind, {"skipped": "the tree is gone"})
            return
        if isinstance(step, LlmFaultStep):
            self._inject_llm(at, injection, step)
            return
        if isinstance(step, HostFaultStep):
            self._inject_host(at, runtime, injection, step)
            return
        targets = self._targets(runtime, injection)
        handles: list[str] = []
        for target in targets:
            spec = _spec(step, target, injection.seed)
            op = self._record("nemesis", "invoke", step.kind, {"target": target})
            try:
                if _process_fault(step):
                    assert isinstance(step, ActorFaultStep)  # noqa: S101 - checked above
                    fault_id = self._signal_actor(at, runtime, step, target)
                else:
                    fault_id = runtime.faults.inject(spec).id
            except (UnderstudyError, ValueError, OSError) as exc:
                self._record(
                    "nemesis", "fail", step.kind, {"target": target}, op=op, error=str(exc)
                )
                raise _Abort(f"injecting {step.kind} on {target} failed: {exc}") from None
            self._record("nemesis", "ok", step.kind, {"target": target, "id": fault_id}, op=op)
            entry = {
                "id": fault_id,
                "kind": step.kind,
                "target": target,
                "at": now,
                "until": None,
                "spec": {k: v for k, v in spec.items() if v is not None},
                "fault_index": injection.index,
                "count": injection.count,
            }
            self._faults.append(entry)
            self._injected(injection, target, fault_id, injection.until)
            if not _process_fault(step):
                handles.append(fault_id)
            if not is_lasting(step):
                self._watch_recovery(at, runtime, entry)
        if injection.until is not None and handles:
            key = id(injection)
            self._active[key] = handles
            at(injection.until, _Always(functools.partial(self._heal, runtime, key)))
        log.info("experiment_injected", fault=step.kind, targets=targets, at=now)

    def _inject_host(
        self,
        at: Callable[[float, Callable[[], object]], None],
        runtime: Runtime,
        injection: Injection,
        step: HostFaultStep,
    ) -> None:
        lab = self._lab
        assert lab is not None  # noqa: S101 - the loader requires hosts for host faults
        now = self._t()
        if injection.fixed_target is not None:
            targets = [injection.fixed_target]
        elif step.kind == "partition" and step.mode == "halves":
            targets = lab.split_halves()[0]
        else:
            rng = random.Random(injection.seed)  # noqa: S311 - not for security
            targets = pick_paths(lab.names(), step.target, step.pick, rng)
        for name in targets:
            fault_id = f"host-{next(self._host_faults)}"
            op = self._record("nemesis", "invoke", step.kind, {"host": name})
            if step.kind == "kill_host":
                lab.kill_host(name)
            elif step.kind == "pause_host":
                lab.pause_host(name)
                at(self._phase_now() + step.seconds, _Always(functools.partial(self._resume, name)))
            else:
                lab.partition([name], mode="one_way" if step.mode == "one_way" else "isolate")
                at(
                    self._phase_now() + step.seconds,
                    _Always(functools.partial(self._unpartition, name)),
                )
            self._record("nemesis", "ok", step.kind, {"host": name, "id": fault_id}, op=op)
            entry = {
                "id": fault_id,
                "kind": step.kind,
                "target": name,
                "at": now,
                "until": None if step.kind == "kill_host" else round(now + step.seconds, 4),
                "spec": step.model_dump(mode="json", by_alias=True, exclude_none=True),
                "fault_index": injection.index,
                "count": injection.count,
            }
            self._faults.append(entry)
            self._injected(injection, name, fault_id, None)
            self._watch_recovery(at, runtime, entry, host=name)
        log.info("experiment_injected", fault=step.kind, hosts=targets, at=now)

    def _add_hits(self, runtime: Runtime) -> None:
        """Add every message a fault hit (its kind, target, message kind and ordinal) to the
        journal's faults, after the injections themselves."""
        injected = {entry["id"]: entry for entry in self._faults}
        hits: list[dict[str, Any]] = []
        for hit in runtime.faults.journal().injected:
            entry = injected.get(hit.fault_id)
            if entry is None or not is_lasting_kind(entry["kind"], entry["spec"]):
                continue  # a kill now or a pause: the injection itself is the record
            hits.append(
                {
                    "id": hit.fault_id,
                    "kind": hit.fault,
                    "target": hit.target,
                    "at": round(entry["at"] + hit.at, 4),
                    "until": None,
                    "message_kind": hit.message_kind,
                    "ordinal": hit.ordinal,
                    "fault_index": entry["fault_index"],
                    "count": entry["count"],
                }
            )
        hits.sort(key=lambda h: (h["fault_index"], h["count"], h["target"], h["ordinal"]))
        self._faults += hits

    def _inject_llm(
        self,
        at: Callable[[float, Callable[[], object]], None],
        injection: Injection,
        step: LlmFaultStep,
    ) -> None:
        model: ModelServer | FaultProxy | None = self._model or self._proxy
        assert model is not None  # noqa: S101 - started for experiments with model faults
        fault_id = f"llm-{next(self._host_faults)}"
        options: dict[str, Any] = {}
        kind: str = step.error
        if step.error == "429":
            options["retry_after"] = step.retry_after
        if step.error == "timeout":
            options["seconds"] = step.seconds  # held that long, then closed unanswered
        if step.probability is not None:
            options["probability"], options["seed"] = step.probability, injection.seed
        op = self._record("nemesis", "invoke", "llm_error", {"error": step.error})
        model.inject(kind, count=step.count, **options)  # type: ignore[arg-type]
        self._record("nemesis", "ok", "llm_error", {"error": step.error, "id": fault_id}, op=op)
        now = self._t()
        self._faults.append(
            {
                "id": fault_id,
                "kind": "llm_error",
                "target": step.target,
                "at": now,
                "until": None,
                "spec": step.model_dump(mode="json", by_alias=True, exclude_none=True),
                "fault_index": injection.index,
                "count": injection.count,
            }
        )
        self._injected(injection, step.target, fault_id, injection.until)
        if injection.until is not None:
            at(injection.until, _Always(functools.partial(self._clear_llm, fault_id)))
        log.info("experiment_injected", fault="llm_error", error=step.error, at=now)

    def _clear_llm(self, fault_id: str) -> None:
        for model in (self._model, self._proxy):
            if model is not None:
                model.clear_faults()
        for entry in self._faults:
            if entry["id"] == fault_id and entry["until"] is None:
                entry["until"] = self._t()

    def _resume(self, name: str) -> None:
        if self._lab is not None:
            self._lab.resume_host(name)
            self._record("nemesis", "info", "resume_host", {"host": name})

    def _unpartition(self, name: str) -> None:
        if self._lab is not None:
            self._lab.heal(name)
            self._record("nemesis", "info", "heal_partition", {"host": name})

    def _injected(
        self, injection: Injection, target: str, fault_id: str, until: float | None
    ) -> None:
        """Record an injection the way ``--replay`` reads it back."""
        self._injections.append(
            {
                "index": injection.index,
                "count": injection.count,
                "at": injection.at,
                "until": until,
                "target": target,
                "seed": injection.seed,
                "id": fault_id,
                "kind": injection.step.kind,
            }
        )

    def _targets(self, runtime: Runtime, injection: Injection) -> list[str]:
        step = injection.step
        assert isinstance(step, MessageFaultStep | ActorFaultStep)  # noqa: S101 - llm handled
        if injection.fixed_target is not None:
            return [injection.fixed_target]
        paths = runtime._live_paths(5.0)
        rng = random.Random(injection.seed)  # noqa: S311 - not for security
        return pick_paths(paths, step.target, step.pick, rng)

    def _signal_actor(
        self,
        at: Callable[[float, Callable[[], object]], None],
        runtime: Runtime,
        step: ActorFaultStep,
        target: str,
    ) -> str:
        """A kill (now) or a pause, done to the actor's process by ``rt.faults`` (SIGKILL, or
        SIGSTOP and a SIGCONT ``seconds`` later: healed then, and at the end of the run,
        whatever happens)."""
        fault = ActorFault(fault=step.kind, target=target, seconds=step.seconds)
        fault_id = runtime.faults.inject(fault).id
        if step.kind == "pause":
            resume = functools.partial(self._continue, runtime, fault_id)
            at(self._phase_now() + fault.pause_seconds, _Always(resume))
        log.info("experiment_signalled", fault=step.kind, target=target, fault_id=fault_id)
        return fault_id

    def _continue(self, runtime: Runtime, fault_id: str) -> None:
        with contextlib.suppress(UnderstudyError):
            runtime.faults.heal(fault_id)
        self._record("nemesis", "info", "resume", {"id": fault_id})

    def _heal(self, runtime: Runtime, key: int) -> None:
        now = self._t()
        for fault_id in self._active.pop(key, []):
            with contextlib.suppress(UnderstudyError):
                runtime.faults.heal(fault_id)
            for entry in self._faults:
                if entry["id"] == fault_id and entry["until"] is None:
                    entry["until"] = now
            self._record("nemesis", "info", "heal", {"id": fault_id})

    def _close_active(self) -> None:
        now = self._t()
        for entry in self._faults:
            if entry["until"] is None and is_lasting_kind(entry["kind"], entry["spec"]):
                entry["until"] = now
        self._active.clear()

    def _watch_recovery(
        self,
        at: Callable[[float, Callable[[], object]], None],
        runtime: Runtime,
        entry: dict[str, Any],
        *,
        host: str | None = None,
    ) -> None:
        """After a kill or pause: when the supervisor heard, when the target answered again,
        when every steady-state probe held again."""
        fault_wall = time.time()
        fault_t = time.monotonic()
        record = {
            "fault_id": entry["id"],
            "fault_kind": entry["kind"],
            "target": entry["target"],
            "fault_to_told": None,
            "told_to_answering": None,
            "fault_to_steady": None,
        }
        self._recoveries.append(record)
        answered: dict[str, float] = {}

        expects_told = entry["kind"] in ("kill", "kill_host")

        def poll() -> None:
            elapsed = time.monotonic() - fault_t
            told = record["fault_to_told"]
            if told is None:
                told = _told(runtime, entry["target"], fault_wall, host=host is not None)
                record["fault_to_told"] = None if told is None else round(told, 4)
            if told is not None or not expects_told:
                if "answering" not in answered and (
                    self._probes_hold(runtime)
                    if host is not None
                    else _answers(runtime, entry["target"], 0.2)
                ):
                    answered["answering"] = elapsed
                if "answering" in answered and self._probes_hold(runtime):
                    record["fault_to_steady"] = round(elapsed, 4)
                    if told is not None:
                        waited = max(0.0, answered["answering"] - told)
                        record["told_to_answering"] = round(waited, 4)
                    return
            if elapsed < _RECOVERY_LIMIT:
                at(self._phase_now() + _RECOVERY_POLL, _Always(poll))

        at(self._phase_now() + _RECOVERY_POLL, _Always(poll))

    def _phase_now(self) -> float:
        return time.monotonic() - self._phase_start

    # --- Workload ----------------------------------------------------------------------------

    def _schedule_workload(
        self,
        at: Callable[[float, Callable[[], object]], None],
        runtime: Runtime,
        context: RunContext,
        index: int,
        workload: Workload,
    ) -> None:
        name = workload.name or f"{workload.kind}-{index}"
        count = int(self.experiment.duration * workload.rate)
        for k in range(count):
            when = k / workload.rate
            at(when, functools.partial(self._operate, runtime, context, name, workload, k))

    def _operate(
        self, runtime: Runtime, context: RunContext, name: str, workload: Workload, k: int
    ) -> None:
        if isinstance(workload, MessagesWorkload):
            message = build_message(workload.message)
            self._ask_op(runtime, name, "ask", workload.to, message, workload.timeout, k)
        elif isinstance(workload, TasksWorkload):
            self._task_op(runtime, name, workload, k)
        elif isinstance(workload, GoalsWorkload):
            self._goal_op(runtime, name, workload, k)
        else:
            assert isinstance(workload, PythonWorkload)  # noqa: S101 - the last workload kind
            op = self._record(name, "invoke", workload.call, k)
            started = time.monotonic()
            try:
                value = resolve_call(workload.call)(context)
            except Exception as exc:  # noqa: BLE001 - a failed operation is recorded, not raised
                self._record(name, "fail", workload.call, str(exc), op=op, latency=_since(started))
            else:
                self._record(
                    name, "ok", workload.call, _jsonable(value), op=op, latency=_since(started)
                )

    def _ask_op(
        self,
        runtime: Runtime,
        name: str,
        f: str,
        path: str,
        message: Message,
        timeout: float,
        k: int,
    ) -> Message | None:
        value = {"to": path, "kind": message.kind, "n": k}
        op = self._record(name, "invoke", f, value, timeout=timeout)
        started = time.monotonic()
        try:
            reply = runtime.ask(path, message, timeout=timeout)
        except UnderstudyError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._record(name, "fail", f, value, op=op, latency=_since(started), error=error)
            return None
        self._record(name, "ok", f, value, op=op, latency=_since(started), reply=reply.kind)
        return reply

    def _goal_op(self, runtime: Runtime, name: str, workload: GoalsWorkload, k: int) -> None:
        """Start a run (the operation), then watch it to its outcome without holding up the
        loop: ``ok`` when it succeeded, ``fail`` when it ended otherwise."""
        goal = workload.goals[k % len(workload.goals)]
        value: dict[str, Any] = {"goal": goal, "n": k}
        op = self._record(name, "invoke", "run_goal", value, timeout=workload.timeout)
        started = time.monotonic()
        try:
            reply = runtime.ask(
                workload.orchestrator,
                RunGoalRequest(goal=goal, owner="experiment"),
                timeout=min(workload.timeout, 10.0),
            )
        except UnderstudyError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._record(
                name, "fail", "run_goal", value, op=op, latency=_since(started), error=error
            )
            return
        if not isinstance(reply, RunAccepted):
            error = f"unexpected reply {reply.kind}"
            self._record(
                name, "fail", "run_goal", value, op=op, latency=_since(started), error=error
            )
            return
        value["run_id"] = reply.run_id
        self._pending_runs[op] = (name, workload, value, started)
        self._at(
            self._phase_now() + _RUN_POLL, _Always(functools.partial(self._poll_run, runtime, op))
        )

    def _poll_run(self, runtime: Runtime, op: int) -> None:
        name, workload, value, started = self._pending_runs[op]
        outcome = None
        with contextlib.suppress(UnderstudyError):
            progress = runtime.ask(
                workload.orchestrator,
                GetRunProgress(run_id=value["run_id"], since=1_000_000),
                timeout=5.0,
            )
            outcome = progress.outcome if isinstance(progress, RunProgress) else None
        if outcome is not None:
            del self._pending_runs[op]
            kind = "ok" if outcome.success else "fail"
            done = {**value, "success": outcome.success, "score": outcome.score}
            if outcome.error:
                done["error"] = outcome.error
            self._record(name, kind, "run_goal", done, op=op, latency=_since(started))
            return
        if time.monotonic() - started < workload.timeout + _RUN_GRACE:
            poll = functools.partial(self._poll_run, runtime, op)
            self._at(self._phase_now() + _RUN_POLL, _Always(poll))

    def _task_op(self, runtime: Runtime, name: str, workload: TasksWorkload, k: int) -> None:
        task_id = f"experiment-{self.experiment.seed}-{k}"
        submit = SubmitTask(description=f"experiment task {k}", task_id=task_id)
        if self._ask_op(runtime, name, "submit", workload.scheduler, submit, workload.timeout, k):
            start = StartTask(task_id=task_id, agent="experiment")
            if self._ask_op(runtime, name, "start", workload.scheduler, start, workload.timeout, k):
                done = CompleteTask(task_id=task_id, result=k)
                self._ask_op(
                    runtime, name, "complete", workload.scheduler, done, workload.timeout, k
                )

    def _workload_summary(self) -> dict[str, int]:
        ops = [h for h in self._history if h["process"] != "nemesis"]
        return {
            "operations": sum(1 for h in ops if h["type"] == "invoke"),
            "ok": sum(1 for h in ops if h["type"] == "ok"),
            "fail": sum(1 for h in ops if h["type"] == "fail"),
            "info": sum(1 for h in ops if h["type"] == "info"),
            "skipped": self._skipped,
        }

    # --- Steady state --------------------------------------------------------------------------

    def _check_probes(self, runtime: Runtime, context: RunContext, phase: str) -> bool:
        results = [
            self._probe_once(runtime, context, p, phase) for p in self.experiment.steady_state
        ]
        return all(results)

    def _probe_once(self, runtime: Runtime, context: RunContext, probe: Probe, phase: str) -> bool:
        started = time.monotonic()
        ok, detail = _probe(runtime, context, probe)
        self._probes.append(
            {
                "probe": probe.probe,
                "path": probe.path,
                "phase": phase,
                "ok": ok,
                "detail": detail,
                "seconds": round(time.monotonic() - started, 4),
                "at": self._t(),
            }
        )
        if not ok:
            log.warning("experiment_probe_failed", probe=probe.probe, phase=phase, detail=detail)
        return ok

    def _tree_gone(self, reason: str) -> None:
        """The root gave up during the fault phase: every after-probe fails, saying so."""
        for probe in self.experiment.steady_state:
            self._probes.append(
                {
                    "probe": probe.probe,
                    "path": probe.path,
                    "phase": "after",
                    "ok": False,
                    "detail": f"the tree is gone: its root exited ({reason})",
                    "seconds": 0.0,
                    "at": self._t(),
                }
            )

    def _ledger(self, runtime: Runtime) -> dict[str, Any]:
        try:
            return runtime.ledger().model_dump(mode="json")
        except UnderstudyError as exc:
            log.warning("experiment_ledger_unavailable", error=str(exc))
            return {}

    def _probes_hold(self, runtime: Runtime) -> bool:
        context = RunContext(runtime, self.experiment, self._started)
        return all(_probe(runtime, context, p)[0] for p in self.experiment.steady_state)

    def _settle(self, runtime: Runtime) -> None:
        """Wait (up to ``quiet`` seconds) until the ledger balances: in-flight messages land."""
        deadline = time.monotonic() + self.experiment.quiet
        while time.monotonic() < deadline:
            with contextlib.suppress(UnderstudyError):
                if runtime.ledger().balanced:
                    return
            time.sleep(0.1)  # polling the ledger until it balances or the bound passes

    # --- Invariants ----------------------------------------------------------------------------

    def _names(self) -> list[str]:
        return [i if isinstance(i, str) else i.name for i in self.experiment.invariants]

    def _verdicts(
        self,
        runtime: Runtime,
        context: RunContext,
        events: list[Any],
        ledger: dict[str, Any],
    ) -> dict[str, inv.Verdict]:
        verdicts: dict[str, inv.Verdict] = {}
        root = self.loaded.topology.root.id
        for invariant in self.experiment.invariants:
            if isinstance(invariant, UserInvariant):
                verdicts[invariant.name] = self._user(invariant, context)
                continue
            if invariant == "no_lost_messages":
                verdicts[invariant] = (
                    inv.no_lost_messages(ledger)
                    if ledger
                    else inv.Verdict(False, "the ledger could not be read: the tree is gone")
                )
            elif invariant == "tree_alive":
                verdicts[invariant] = inv.tree_alive(events, runtime.exit_reason, root)
            elif invariant == "restart_limits":
                verdicts[invariant] = inv.restart_limits(events, _limits(self.loaded.topology))
            elif invariant == "single_instance":
                verdicts[invariant] = inv.single_instance(events)
            elif invariant == "fail_fast":
                verdicts[invariant] = inv.fail_fast(self._history)
            elif invariant == "tasks_terminal":
                verdicts[invariant] = self._tasks_terminal(runtime)
            elif invariant == "liveness_after_heal":
                verdicts[invariant] = self._liveness(runtime)
            elif invariant == "llm_budget":
                verdicts[invariant] = self._llm_budget()
        return verdicts

    def _llm_budget(self) -> inv.Verdict:
        if self._model is not None:
            records = [r.model_dump(mode="json") for r in self._model.stats().request_log]
        elif self._proxy is not None:
            records = self._proxy.request_log()
        else:
            msg = "llm_budget needs the model's request log: the embedded model or the proxy"
            return inv.Verdict(False, msg)
        self._model_log = records
        waits = [
            f.retry_after
            for f in self.experiment.faults
            if isinstance(f, LlmFaultStep) and f.error == "429"
        ]
        return inv.llm_budget(records, max(waits, default=0.0))

    def _user(self, invariant: UserInvariant, context: RunContext) -> inv.Verdict:
        try:
            result = resolve_call(invariant.call)(self._history, context)
        except Exception as exc:  # noqa: BLE001 - a broken predicate fails its invariant
            return inv.Verdict(False, f"{invariant.call} raised {type(exc).__name__}: {exc}")
        if isinstance(result, tuple):
            return inv.Verdict(bool(result[0]), str(result[1]) if len(result) > 1 else "")
        return inv.Verdict(bool(result), f"{invariant.call} returned {result!r}")

    def _tasks_terminal(self, runtime: Runtime) -> inv.Verdict:
        paths = {w.scheduler for w in self.experiment.workload if isinstance(w, TasksWorkload)}
        tasks: list[dict[str, Any]] = []
        for path in sorted(paths or {"root/system/scheduler"}):
            try:
                reply = runtime.ask(path, ListTasks(), timeout=5.0)
            except UnderstudyError as exc:
                return inv.Verdict(False, f"cannot list the tasks of {path}: {exc}")
            if isinstance(reply, Tasks):
                tasks += [t.model_dump(mode="json") for t in reply.tasks]
        return inv.tasks_terminal(tasks)

    def _liveness(self, runtime: Runtime) -> inv.Verdict:
        within = self.experiment.liveness_within
        answers: dict[str, float | None] = {}
        try:
            paths = runtime._live_paths(5.0)[1:]
        except UnderstudyError as exc:
            return inv.Verdict(False, f"the live actors could not be listed: {exc}")
        for path in paths:
            started = time.monotonic()
            answers[path] = _since(started) if _answers(runtime, path, within) else None
        return inv.liveness_after_heal(answers, within)

    # --- Processes -----------------------------------------------------------------------------

    def _note_pids(self, runtime: Runtime) -> None:
        """An actor process of this run that no live actor of the tree accounts for, seen so in
        two checks in a row, is an orphan (a process a crash left behind)."""
        if runtime.base != "multiprocTCPBase":
            return
        try:
            tree = _tree_pids(runtime, self.loaded.topology.root.id)
        except UnderstudyError:
            return
        processes = _actor_processes()
        self._known_pids |= processes
        self._orphan_checks += 1
        strays = processes - tree
        for pid in sorted(strays & self._suspects):
            self._strays.append({"pid": pid, "when": f"at {self._t():.1f} s"})
            self._known_pids.discard(pid)
        self._suspects = strays - (strays & self._suspects)

    def _check_orphans(self, *, after: bool) -> None:
        """After the tree stopped: every actor process seen during the run has exited."""
        del after
        procs: list[psutil.Process] = []
        for pid in sorted(self._known_pids):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        _gone, alive = psutil.wait_procs(procs, timeout=_EXIT_WAIT)
        self._orphan_checks += 1
        for process in alive:
            if _alive(process):
                self._strays.append({"pid": process.pid, "when": "after the run"})

    @staticmethod
    def _event_json(event: Any, wall_started: float) -> dict[str, Any]:
        return {
            "at": round(event.time - wall_started, 4),
            "event": event.event,
            "path": f"{event.supervisor}/{event.child_id}" if event.child_id else event.supervisor,
            "reason": event.reason,
            "host": event.host,
        }


class _Always:
    """An action that runs even when due after the fault phase (a heal, a recovery watch)."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action

    def __call__(self) -> None:
        self._action()


def _is_heal(action: Callable[[], object]) -> bool:
    return isinstance(action, _Always)


def _process_fault(step: FaultStep) -> bool:
    """A fault the runner does to an actor's process itself (a kill now, a pause)."""
    return isinstance(step, ActorFaultStep) and (
        step.kind == "pause" or (step.kind == "kill" and step.point == "now")
    )


def is_lasting_kind(kind: str, spec: Mapping[str, Any]) -> bool:
    return not (kind == "pause" or (kind == "kill" and spec.get("point", "now") == "now"))


def _spec(step: MessageFaultStep | ActorFaultStep, target: str, seed: int) -> dict[str, Any]:
    common: dict[str, Any] = {
        "fault": step.kind,
        "target": target,
        "message_kind": step.message_kind,
        "sender": step.sender,
        "nth": step.nth,
        "every_nth": step.every_nth,
        "probability": step.probability,
        "max_total": step.max_total,
        "seed": seed,
    }
    if isinstance(step, MessageFaultStep):
        if step.delay is not None:
            common["delay"] = step.delay.model_dump(exclude_none=True)
        if step.window is not None:
            common["window"] = step.window
        if step.corrupt is not None:
            common["corrupt"] = step.corrupt
        return common
    if step.kind == "kill":
        common["point"] = step.point
    if step.kind in ("hang", "slow_start", "slow_shutdown"):
        common["seconds"] = step.seconds
    return common


def _probe(runtime: Runtime, context: RunContext, probe: Probe) -> tuple[bool, str]:
    if isinstance(probe, AnswersProbe):
        message = build_message(probe.message) if probe.message else GetLedger()
        started = time.monotonic()
        try:
            runtime.ask(probe.path, message, timeout=probe.within)
        except UnderstudyError as exc:
            return False, f"{probe.path} did not answer within {probe.within} s: {exc}"
        return True, f"{probe.path} answered in {_since(started):.3f} s"
    if isinstance(probe, ChildrenProbe):
        try:
            children = runtime.which_children(probe.path, timeout=probe.within)
        except UnderstudyError as exc:
            return False, f"cannot list the children of {probe.path}: {exc}"
        idle = [c.id for c in children if c.status != "running"]
        if idle:
            return False, f"{probe.path}: not running: {', '.join(idle)}"
        return True, f"{probe.path}: {len(children)} child(ren) running"
    assert isinstance(probe, PythonProbe)  # noqa: S101 - the last probe kind
    try:
        result = resolve_call(probe.call)(context)
    except Exception as exc:  # noqa: BLE001 - a probe that raises did not hold
        return False, f"{probe.call} raised {type(exc).__name__}: {exc}"
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1]) if len(result) > 1 else ""
    return bool(result), f"{probe.call} returned {result!r}"


def _answers(runtime: Runtime, path: str, within: float) -> bool:
    try:
        runtime.ask(path, GetLedger(), timeout=within)
    except (ActorExited, ActorNotFound, AskTimeout, UnderstudyError):
        return False
    return True


def _told(runtime: Runtime, target: str, since_wall: float, *, host: bool) -> float | None:
    """Seconds from ``since_wall`` to the first event after it that told the tree: the exit of
    the actor ``target``, or the ``host_down`` of the host ``target``."""
    with contextlib.suppress(UnderstudyError):
        for event in runtime.events(timeout=5.0):
            if event.time < since_wall:
                continue
            if host and event.event == "host_down" and target in (event.child_id, event.host):
                return max(0.0, event.time - since_wall)
            path = f"{event.supervisor}/{event.child_id}" if event.child_id else None
            if not host and path == target and event.event == "child_exited":
                return max(0.0, event.time - since_wall)
    return None


def _limits(topology: Topology) -> dict[str, tuple[int, float]]:
    limits: dict[str, tuple[int, float]] = {}

    def walk(spec: SupervisorSpec, path: str) -> None:
        workers = [c for c in [*spec.children, spec.template] if isinstance(c, ChildSpec)]
        # Children with a restart_limit are bounded one by one, not by the intensity.
        if not any(c.restart_limit is not None for c in workers):
            limits[path] = (spec.intensity, spec.period)
        for child in spec.children:
            if isinstance(child, SupervisorSpec):
                walk(child, f"{path}/{child.id}")

    walk(topology.root, topology.root.id)
    return limits


def _replayed(journal_file: Path, experiment: Experiment) -> list[Injection]:
    """The injections a journal recorded, to apply again exactly: same faults, same targets,
    same seeds, same times."""
    try:
        recorded = json.loads(journal_file.read_text(encoding="utf-8"))["injections"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{journal_file}: not a journal.json with recorded injections ({exc})"
        raise ValueError(msg) from None
    planned: list[Injection] = []
    for entry in recorded:
        index = int(entry["index"])
        if not 0 <= index < len(experiment.faults):
            msg = f"{journal_file}: injection of fault {index}, which the experiment lacks"
            raise ValueError(msg)
        planned.append(
            Injection(
                index,
                int(entry["count"]),
                float(entry["at"]),
                entry["until"],
                experiment.faults[index],
                int(entry["seed"]),
                fixed_target=str(entry["target"]),
            )
        )
    planned.sort(key=lambda i: (i.at, i.index, i.count))
    return planned


def _tree_pids(runtime: Runtime, root: str) -> set[int]:
    """The processes of the live actors of the tree."""
    pids: set[int] = set()
    pending = [root]
    while pending:
        path = pending.pop()
        for child in runtime.which_children(path, timeout=5.0):
            if child.status == "running" and child.pid is not None:
                pids.add(child.pid)
            if child.type == "supervisor" and child.status == "running":
                pending.append(f"{path}/{child.id}")
    return pids


def _actor_processes() -> set[int]:
    """This program's actor processes: forked from it (the same command line; Thespian's admin
    daemonizes, so parentage does not tell) and named as Understudy names its workers."""
    me = psutil.Process()
    mine = me.cmdline()
    found: set[int] = set()
    for process in psutil.process_iter(["pid", "cmdline", "name", "status"]):
        info = process.info
        if info["pid"] == me.pid or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["cmdline"] == mine and info["name"] == WORKER_PROCESS_NAME:
            found.add(info["pid"])
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _since(started: float) -> float:
    return round(time.monotonic() - started, 4)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
