"""Follow a run as it happens: ``Runtime.run_events`` and ``Runtime.subscribe_run``.

    for event in rt.run_events(run_id):            # PhaseEvents, each as it happens
        print(event.phase, event.what, event.detail)

    sub = rt.subscribe_run(run_id, print)          # the same, on a thread of its own
    outcome = sub.wait(300)

Events are pushed by a long poll: each ``GetRunProgress(wait=...)`` is held by the
orchestrator until the run has a new event (answered at once) or ``poll`` seconds pass. There
is no polling interval and no event is missed or repeated (a cursor). Memory is bounded: at
most ``max_events`` events are held here at once, and a consumer that does not keep up only
delays the next request (the orchestrator keeps a run's events). The iteration ends after the
run's last event, with ``outcome`` set. An orchestrator killed while it holds a request is
replaced by its supervisor and the request goes to the replacement (the Runtime resolves the
path again); a run it reloads as interrupted ends there, with its outcome.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog

from actors.errors import ActorCrashed, ActorExited, AskTimeout, RuntimeStopped
from protocols.errors import UnderstudyError
from protocols.orchestrator import GetRunProgress, PhaseEvent, RunOutcome, RunProgress

if TYPE_CHECKING:
    from actors.core.runtime import Runtime

__all__ = ["DEFAULT_ORCHESTRATOR", "RunEvents", "RunSubscription"]

log = structlog.get_logger("understudy.runtime")

DEFAULT_ORCHESTRATOR = "root/orchestrator"
# Extra seconds an ask waits beyond the poll the orchestrator holds it for.
_ASK_SLACK = 10.0


class RunEvents(Iterator[PhaseEvent]):
    """The events of one run, each as it happens; ``outcome`` is set once they end.

    Raises (from ``next``):
        AskTimeout: no event within ``timeout`` seconds.
        UnderstudyError: the orchestrator answered an error (e.g. an unknown run) or is gone.
    """

    def __init__(
        self,
        runtime: Runtime,
        run_id: str,
        *,
        orchestrator: str = DEFAULT_ORCHESTRATOR,
        since: int = 0,
        timeout: float | None = 300.0,
        poll: float = 1.0,
        max_events: int = 1000,
    ) -> None:
        if poll <= 0 or max_events <= 0:
            msg = f"poll and max_events must be > 0, got poll={poll}, max_events={max_events}"
            raise ValueError(msg)
        self.run_id = run_id
        self.outcome: RunOutcome | None = None
        """The run's outcome, once the last event has been taken."""
        self.cursor = since
        """How many of the run's events have been fetched."""
        self._runtime = runtime
        self._orchestrator = orchestrator
        self._timeout = timeout
        self._poll = poll
        self._max_events = max_events
        self._buffer: deque[PhaseEvent] = deque()
        self._ended = False
        self._closed = threading.Event()

    def __iter__(self) -> RunEvents:
        return self

    def __next__(self) -> PhaseEvent:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._buffer:
            if self._ended or self._closed.is_set():
                raise StopIteration
            wait = self._poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AskTimeout(f"the next event of run {self.run_id!r}", self._timeout or 0.0)
                wait = min(wait, remaining)
            try:
                self._fetch(wait)
            except ActorCrashed:
                raise
            except ActorExited as exc:
                # The orchestrator died holding this request (a kill, a lost host): the read
                # is idempotent (a cursor), so ask its replacement, within the deadline.
                log.info("run_follow_retried", run_id=self.run_id, reason=exc.reason)
        return self._buffer.popleft()

    def close(self) -> None:
        """Stop following (a ``next`` in progress ends after its current poll)."""
        self._closed.set()

    def _fetch(self, wait: float) -> None:
        request = GetRunProgress(
            run_id=self.run_id, since=self.cursor, wait=wait, max_events=self._max_events
        )
        reply = self._runtime.ask(self._orchestrator, request, timeout=wait + _ASK_SLACK)
        if not isinstance(reply, RunProgress):
            msg = f"{self._orchestrator} answered {reply.kind!r} to {request.kind!r}"
            raise UnderstudyError(msg)
        self._buffer.extend(reply.events)
        self.cursor += len(reply.events)
        if reply.outcome is not None and len(reply.events) < self._max_events:
            self.outcome = reply.outcome
            self._ended = True


class RunSubscription:
    """``callback`` called with each event of a run, on a thread of its own."""

    def __init__(self, events: RunEvents, callback: Callable[[PhaseEvent], object]) -> None:
        self.events = events
        self.error: BaseException | None = None
        """What ended the subscription early (a timeout, a lost orchestrator), if anything."""
        self._callback = callback
        self._thread = threading.Thread(
            target=self._follow, name=f"understudy-run-{events.run_id}", daemon=True
        )
        self._thread.start()

    @property
    def outcome(self) -> RunOutcome | None:
        """The run's outcome once every event has been delivered."""
        return self.events.outcome

    @property
    def done(self) -> bool:
        """True once the subscription has ended (the run ended, an error, or ``close``)."""
        return not self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop delivering events and wait (up to ``timeout``) for the thread to end."""
        self.events.close()
        self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        """Wait until the subscription ends; return the outcome (None if closed first).

        Raises:
            AskTimeout: it has not ended within ``timeout`` seconds.
            UnderstudyError: what ended it early (``error``).
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AskTimeout(f"the end of run {self.events.run_id!r}", timeout or 0.0)
        if self.error is not None:
            raise self.error
        return self.outcome

    def _follow(self) -> None:
        try:
            for event in self.events:
                self._callback(event)
        except RuntimeStopped:
            pass  # the runtime shut down: nothing more to follow
        except Exception as exc:  # noqa: BLE001 - kept for wait() to raise in the caller
            log.warning("run_subscription_ended", run_id=self.events.run_id, error=repr(exc))
            self.error = exc
