"""Prometheus metrics of a running tree, read from it at scrape time.

    rt.metrics_text()                      # the text exposition format, now
    server = rt.serve_metrics(9100)        # http://127.0.0.1:9100/metrics until server.close()
    registry.register(RuntimeCollector(rt, prices={...}))   # into a registry of your own

Nothing is counted on the message path: each scrape asks the tree (the guardian's supervision
events since the last scrape, every worker's ledger, the scheduler's, run manager's and
orchestrator's statistics). A part the tree does not have (no scheduler, no orchestrator) is
left out; a part that does not answer is named in ``understudy_scrape_errors``.

Families (``_total`` are counters):

    understudy_child_starts_total{supervisor}                  child_started events
    understudy_child_exits_total{supervisor,reason}            child_exited, by reason class
    understudy_child_restarts_total{supervisor}                child_restarted
    understudy_intensity_exceeded_total{supervisor}            a supervisor gave up (OTP)
    understudy_restart_limit_exceeded_total{supervisor}        a child over its own limit
    understudy_supervision_events_total{event}                 every supervision event
    understudy_messages_total{event}                           the ledger: sent, delivered,
                                                               handled, dead_lettered, ...
    understudy_messages_by_kind_total{kind,event}              the same per message kind
    understudy_ledger_unreported                               incarnations killed unreported
    understudy_scheduler_tasks{state}                          tasks by state
    understudy_runs{status}                                    runs by status (run manager)
    understudy_model_calls_total{model}                        model calls by the agents
    understudy_model_errors_total{model,error_class}           retryable | fatal | unknown
    understudy_model_input_tokens_total{model}
    understudy_model_output_tokens_total{model}
    understudy_model_cost_dollars_total{model}                 with a price table entry
    understudy_circuit_breaker_state{breaker,state}            1 for the breaker's state
    understudy_scrape_errors{source}                           1: that source did not answer
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

import structlog
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.errors import ActorNotFound
from protocols._base import Message
from protocols.errors import UnderstudyError
from protocols.ledger import LEDGER_EVENTS
from protocols.orchestrator import GetModelStatistics, ModelStatistics
from protocols.runs import GetRunStatistics, RunStatistics
from protocols.scheduler import GetStatistics, SchedulerStatistics
from protocols.supervision import SupervisionEvent
from protocols.topology import ModelPrice

if TYPE_CHECKING:
    from actors.core.runtime import Runtime

__all__ = [
    "BREAKER_STATES",
    "MetricsServer",
    "RuntimeCollector",
    "exit_reason_class",
    "render_metrics",
]

log = structlog.get_logger("understudy.metrics")

_Reply = TypeVar("_Reply", bound=Message)

BREAKER_STATES = ("closed", "open", "half_open")
_SCHEDULER_STATES = ("pending", "running", "completed", "failed", "cancelled", "timed_out")
_RUN_STATUSES = ("running", "stopped", "completed", "failed")
_PER_SUPERVISOR = {
    "child_started": "child_starts",
    "child_restarted": "child_restarts",
    "intensity_exceeded": "intensity_exceeded",
    "restart_limit_exceeded": "restart_limit_exceeded",
}


def exit_reason_class(reason: str | None) -> str:
    """The class of an exit reason, a label with few values: normal, shutdown, killed,
    noconnection, error_retryable, error_fatal, error, or other."""
    reason = reason or "other"
    if reason.startswith("shutdown"):
        return "shutdown"
    if reason in ("normal", "killed", "noconnection"):
        return reason
    match = re.match(r"error:(retryable|fatal):", reason)
    if match:
        return f"error_{match.group(1)}"
    return "error" if reason.startswith("error:") else "other"


class RuntimeCollector(Collector):
    """A ``prometheus_client`` collector reading a Runtime at scrape time.

    Args:
        runtime: the tree to read (started here or attached).
        prices: model name -> price (USD per million tokens) for the estimated cost.
        scheduler, runs, orchestrator: the paths of those services.
        timeout: seconds each question may take.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        scheduler: str = "root/system/scheduler",
        runs: str = "root/system/runs",
        orchestrator: str = "root/orchestrator",
        timeout: float = 5.0,
    ) -> None:
        self._runtime = runtime
        self.prices: dict[str, ModelPrice] = dict(prices or {})
        """The price table in use (replace it to change the estimated costs)."""
        self._paths = {"scheduler": scheduler, "runs": runs, "orchestrator": orchestrator}
        self._timeout = timeout
        self._lock = threading.Lock()
        self._seen = 0
        self._per_supervisor: dict[str, Counter[str]] = {
            n: Counter() for n in _PER_SUPERVISOR.values()
        }
        self._exits: Counter[tuple[str, str]] = Counter()
        self._events: Counter[str] = Counter()

    def collect(self) -> Iterator[Metric]:
        """Read the tree and yield every family (called by the registry at each scrape)."""
        with self._lock:  # one scrape at a time: the supervision cursor is shared
            errors: list[str] = []
            yield from self._supervision(errors)
            yield from self._messages(errors)
            yield from self._services(errors)
            yield from self._models(errors)
            failed = GaugeMetricFamily(
                "understudy_scrape_errors",
                "1 for each source that did not answer this scrape",
                labels=["source"],
            )
            for source in errors:
                failed.add_metric([source], 1.0)
            yield failed

    # --- supervision: the guardian's events since the last scrape ---------------------------

    def _supervision(self, errors: list[str]) -> Iterator[Metric]:
        try:
            fresh = self._runtime.events(since=self._seen, timeout=self._timeout)
        except UnderstudyError as exc:
            log.warning("metrics_source_failed", source="supervision", error=str(exc))
            errors.append("supervision")
            fresh = []
        for event in fresh:
            self._count(event)
        self._seen += len(fresh)
        helps = {
            "child_starts": "children started (child_started events)",
            "child_restarts": "children restarted by their supervisor",
            "intensity_exceeded": "supervisors that gave up: more restarts than their intensity",
            "restart_limit_exceeded": "children stopped alone over their own restart limit",
        }
        for name, counts in self._per_supervisor.items():
            family = CounterMetricFamily(f"understudy_{name}", helps[name], labels=["supervisor"])
            for supervisor, n in sorted(counts.items()):
                family.add_metric([supervisor], n)
            yield family
        exits = CounterMetricFamily(
            "understudy_child_exits",
            "children that exited, by supervisor and reason class",
            labels=["supervisor", "reason"],
        )
        for (supervisor, reason), n in sorted(self._exits.items()):
            exits.add_metric([supervisor, reason], n)
        yield exits
        every = CounterMetricFamily(
            "understudy_supervision_events", "supervision events by name", labels=["event"]
        )
        for name, n in sorted(self._events.items()):
            every.add_metric([name], n)
        yield every

    def _count(self, event: SupervisionEvent) -> None:
        self._events[event.event] += 1
        family = _PER_SUPERVISOR.get(event.event)
        if family is not None:
            self._per_supervisor[family][event.supervisor] += 1
        elif event.event == "child_exited":
            self._exits[(event.supervisor, exit_reason_class(event.reason))] += 1

    # --- messages: the ledger -----------------------------------------------------------------

    def _messages(self, errors: list[str]) -> Iterator[Metric]:
        try:
            ledger = self._runtime.ledger(timeout=self._timeout)
        except UnderstudyError as exc:
            log.warning("metrics_source_failed", source="ledger", error=str(exc))
            errors.append("ledger")
            return
        total = CounterMetricFamily(
            "understudy_messages",
            "messages on the data path by ledger event (protocols.ledger)",
            labels=["event"],
        )
        for name in LEDGER_EVENTS:
            total.add_metric([name], getattr(ledger.total, name))
        yield total
        by_kind = CounterMetricFamily(
            "understudy_messages_by_kind",
            "messages by message kind and ledger event (events with a count only)",
            labels=["kind", "event"],
        )
        for kind, counts in sorted(ledger.by_kind.items()):
            for name in LEDGER_EVENTS:
                value = getattr(counts, name)
                if value:
                    by_kind.add_metric([kind, name], value)
        yield by_kind
        yield GaugeMetricFamily(
            "understudy_ledger_unreported",
            "worker incarnations that died without reporting their ledger (SIGKILL)",
            value=ledger.unreported,
        )

    # --- the scheduler and the run manager -------------------------------------------------

    def _services(self, errors: list[str]) -> Iterator[Metric]:
        tasks = self._ask("scheduler", GetStatistics(), SchedulerStatistics, errors)
        if tasks is not None:
            family = GaugeMetricFamily(
                "understudy_scheduler_tasks", "scheduler tasks by state", labels=["state"]
            )
            for state in _SCHEDULER_STATES:
                family.add_metric([state], getattr(tasks, state))
            yield family
        runs = self._ask("runs", GetRunStatistics(), RunStatistics, errors)
        if runs is not None:
            family = GaugeMetricFamily(
                "understudy_runs", "runs by status (the run manager)", labels=["status"]
            )
            for status in _RUN_STATUSES:
                family.add_metric([status], getattr(runs, status))
            yield family

    # --- agents and models: the orchestrator's tally -------------------------------------

    def _models(self, errors: list[str]) -> Iterator[Metric]:
        stats = self._ask("orchestrator", GetModelStatistics(), ModelStatistics, errors)
        if stats is None:
            return
        calls = CounterMetricFamily(
            "understudy_model_calls", "model calls made by agents", labels=["model"]
        )
        failed = CounterMetricFamily(
            "understudy_model_errors",
            "model calls that failed, by error class",
            labels=["model", "error_class"],
        )
        tokens_in = CounterMetricFamily(
            "understudy_model_input_tokens",
            "prompt tokens, as the model reported",
            labels=["model"],
        )
        tokens_out = CounterMetricFamily(
            "understudy_model_output_tokens",
            "completion tokens, as the model reported",
            labels=["model"],
        )
        cost = CounterMetricFamily(
            "understudy_model_cost_dollars",
            "estimated cost in USD from the price table (system.metrics.prices)",
            labels=["model"],
        )
        for counters in stats.models:
            model = counters.model
            calls.add_metric([model], counters.calls)
            for error_class, n in sorted(counters.errors.items()):
                failed.add_metric([model, error_class], n)
            tokens_in.add_metric([model], counters.input_tokens)
            tokens_out.add_metric([model], counters.output_tokens)
            price = self.prices.get(model)
            if price is not None:
                dollars = (
                    counters.input_tokens * price.input + counters.output_tokens * price.output
                ) / 1_000_000
                cost.add_metric([model], dollars)
        yield from (calls, failed, tokens_in, tokens_out, cost)
        breakers = GaugeMetricFamily(
            "understudy_circuit_breaker_state",
            "1 for each circuit breaker's current state (agents running now, and the "
            "orchestrator's delegation breaker)",
            labels=["breaker", "state"],
        )
        for name, state in sorted(stats.breakers.items()):
            for candidate in BREAKER_STATES:
                breakers.add_metric([name, candidate], 1.0 if candidate == state else 0.0)
        yield breakers

    def _ask(
        self, source: str, request: Message, expected: type[_Reply], errors: list[str]
    ) -> _Reply | None:
        try:
            reply = self._runtime.ask(self._paths[source], request, timeout=self._timeout)
        except ActorNotFound:
            return None  # the tree has no such service: nothing to report
        except UnderstudyError as exc:
            log.warning("metrics_source_failed", source=source, error=str(exc))
            errors.append(source)
            return None
        if not isinstance(reply, expected):
            log.warning("metrics_source_failed", source=source, error=f"answered {reply.kind}")
            errors.append(source)
            return None
        return reply


class MetricsServer:
    """``/metrics`` over HTTP on loopback (127.0.0.1) for a collector
    (``Runtime.serve_metrics``); port 0 picks a free one."""

    def __init__(self, collector: Collector, *, port: int = 0) -> None:
        host = "127.0.0.1"
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port: int = self._server.server_address[1]
        """The port it listens on (the one chosen when 0 was asked)."""
        log.info("metrics_serving", url=self.url)

    @property
    def url(self) -> str:
        """Where Prometheus scrapes: ``http://<host>:<port>/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_metrics(collector: Collector) -> str:
    """The text exposition of one collector's families now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()
