"""Every workaround for a Thespian defect lives here, named and tested
(tests/integration/test_workarounds.py).

1. Orphans outlive their parent (thespian 4.0.1, multiprocTCPBase). When an actor process is
   SIGKILLed its children keep running, still answer messages, and even survive
   ``ActorSystem.shutdown()``. OTP links would take them down. :func:`die_with_parent` asks the
   kernel (Linux ``PR_SET_PDEATHSIG``) to SIGKILL an actor process when its parent process
   dies, so a killed subtree dies whole and its supervisor restarts it cleanly.
2. ``ActorSystem.ask`` returns whatever message arrives next, and ``None`` both on timeout and
   on a failed delivery. :func:`ask_correlated` sends one request, skips stale replies by
   correlation id, and tells a failed delivery (``None`` well before the deadline: the target
   process is gone) from a real timeout.
3. The TCP admin is a daemon: when the program that started an ActorSystem dies without
   shutting it down (SIGKILL), the admin and every actor live on. The guardian watches the
   owner's pid (:func:`process_alive`) and, when it is gone, stops the tree in order and then
   the admin; it also dies with the admin (:func:`die_with_parent`).
4. A handler that raises is retried by Thespian with the same message and the actor is kept
   alive with its possibly corrupted state. ``actors.core.seam.SeamActor.receiveMessage`` never
   lets an exception reach Thespian; the worker turns it into one crash (see actors/worker.py).
5. The TCP transport backs off slowly: a transmit that finds a connection refused or still in
   progress (the first message to an actor's replacement, a send to a dead address) pauses
   34 ms, then 1.7 times longer each time, up to 7.3 s. A SIGKILLed child's replacement
   answered its first ask ~42 ms after the kill, and a few unlucky retries added up to about
   a second. :func:`tune_transport_backoff` starts the pause at 1.7 ms and caps it at 250 ms
   (a SIGKILLed child's replacement then answers in ~20 ms).
6. and 7. are told where they are handled: :func:`detached_signals` and :data:`EXIT_GRACE`.
8. Thespian creates every actor through ``withPossibleInitArgs.create``, which reads the
   class's ``__init__`` signature to pass it only the arguments it names; its first attempt
   reads ``P.name`` off the *names* ``signature().parameters`` yields and always raises, its
   second calls ``inspect.getargspec`` (gone since Python 3.11) and raises too, and its third,
   ``getfullargspec``, computes the signature again: about 40 us per actor created, twice the
   actor's own construction. :func:`presigned` computes the signature once per class and
   stores it where ``inspect`` looks first (``__init__.__signature__``); creating a worker or
   supervisor then costs about 17 us.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import inspect
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import psutil
import structlog
from thespian.system import transport as _transport

from actors.core.seam import FrameMeta, decode_reply
from protocols import codec

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "EXIT_GRACE",
    "LIVENESS_SLICE",
    "DeliveryFailed",
    "ProcessWatch",
    "TargetGone",
    "ask_correlated",
    "detached_signals",
    "die_with_creator",
    "die_with_parent",
    "kill_process",
    "kill_process_tree",
    "name_process",
    "presigned",
    "process_alive",
    "tune_transport_backoff",
]

log = structlog.get_logger("understudy.workarounds")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def name_process(name: str) -> bool:
    """Set this process's name (``/proc/<pid>/comm``, 15 bytes at most): how a host agent
    tells the worker processes of its host from Thespian's own (admin, logger)."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0)


@functools.cache
def _libc() -> Any:
    """The C library (Linux), found once per process and inherited by the processes it forks:
    ``ctypes.util.find_library`` runs ``ldconfig``, about 6 ms, which every worker start paid
    twice before its first message."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    return None if libc_name is None else ctypes.CDLL(libc_name, use_errno=True)


def die_with_parent(parent_pid: int) -> bool:
    """Make the kernel SIGKILL this process when its parent process exits.

    Call it in an actor's own process only (never on simpleSystemBase, where the "actor" is the
    user's program). If the parent is already gone, exit now.

    Returns:
        True if the request was installed (Linux), False where it is not available.
    """
    libc = _libc()
    if libc is None:
        return False
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:  # the parent died before the request was installed
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def die_with_creator() -> None:
    """In an actor process Thespian just forked (multiprocTCPBase), die with the process that
    created it, from the first moment.

    Defect: an actor process learns who its parent is only from a message; when the parent
    dies between the fork and that message (a supervisor stopped right after creating a spare
    worker), the child lives on forever, idle, adopted by init. Thespian names the processes it
    forks ``Actor_<class>__<address>``; elsewhere (simpleSystemBase: the user's own process)
    this does nothing.
    """
    process = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None and process.name.startswith("Actor_"):
        die_with_parent(parent.pid)


@contextlib.contextmanager
def detached_signals() -> Iterator[None]:
    """While an ActorSystem starts (and forks its admin): SIGINT ignored, SIGTERM's default.

    Defect: Thespian resets every signal handler in an actor's process, but not in the admin
    daemon or its logger, which keep the handlers of the program that opened the system:
    ``understudy up`` raises its stop on SIGINT and SIGTERM, so a ``kill -INT`` of the
    deployment's processes (``pkill -INT -f understudy``) raised that stop inside the admin's
    transport loop; the admin stopped answering, the owner's orderly stop waited out its
    60 s bound, and the admin, its logger, the guardian and the root supervisor stayed
    behind. The admin is a daemon: an interrupt is for the program that owns the tree, which
    stops it in order (as an OTP node takes Ctrl-C, not its processes), and SIGTERM ends it.
    Outside the main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def process_alive(pid: int) -> bool:
    """Return True if process ``pid`` is running (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in (b"Z", b"X")


class ProcessWatch:
    """Is process ``pid`` still running? Asked before every Runtime ask to a process (so that
    a dead address never costs Thespian's delivery retries), hence cheaply: a pidfd per pid
    (Linux 5.3+), polled without waiting (readable once the process has ended, a zombie
    included): ~0.4 us against ~17 us for reading ``/proc/<pid>/stat``
    (:func:`process_alive`, the fallback where pidfds are not available). Thread-safe."""

    MAX_WATCHED = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._polls: dict[int, tuple[int, Any]] = {}

    def alive(self, pid: int) -> bool:
        with self._lock:
            entry = self._polls.get(pid)
            if entry is None:
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    return False
                except (AttributeError, OSError):
                    return process_alive(pid)
                poll = select.poll()
                poll.register(fd, select.POLLIN)
                if len(self._polls) >= self.MAX_WATCHED:
                    self._close()
                entry = self._polls[pid] = (fd, poll)
            if entry[1].poll(0):
                os.close(entry[0])
                del self._polls[pid]
                return False
            return True

    def close(self) -> None:
        """Close every pidfd (the watch can still be used: it opens them again)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        for fd, _poll in self._polls.values():
            os.close(fd)
        self._polls.clear()


def kill_process_tree(pid: int, *, spare: int | None = None) -> None:
    """SIGKILL ``pid``'s descendants (but ``spare``), then ``pid`` itself.

    Used when an admin must go: Thespian's logger process is its child and would outlive it.
    """
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for child in children:
        if child.pid != spare:
            kill_process(child.pid)
    kill_process(pid)


EXIT_GRACE = 5.0
"""Seconds a child that reported its orderly exit gets to be gone before its process is killed.

Thespian defect: an exiting actor first asks every actor it ever created to exit and waits
for each to confirm, including one whose creation is still pending on a host that died
meanwhile; that confirmation never comes, so the actor's process never ends and its
supervisor (and a shutdown of the whole tree) waited forever; the guardian's 60 s bound
ended it. A child that said it exits has stopped its own children in order already, so
killing its process after this grace loses nothing."""


def kill_process(pid: int) -> None:
    """SIGKILL ``pid``; a process that is already gone is not an error."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


#: Thespian's transmit backoff after tune_transport_backoff: first pause and cap.
BACKOFF_MIN = timedelta(milliseconds=1)
BACKOFF_MAX = timedelta(milliseconds=250)


def tune_transport_backoff() -> None:
    """Make the TCP transport retry a refused or in-progress transmit sooner (see 5 above).

    Thespian reads the bounds as module globals at each pause, in this process and in every
    actor process it forks afterwards.
    """
    _transport.MIN_BACKOFF_DELAY = BACKOFF_MIN
    _transport.MAX_BACKOFF_DELAY = BACKOFF_MAX


_Cls = TypeVar("_Cls", bound=type)


def presigned(cls: _Cls) -> _Cls:
    """Store ``cls.__init__``'s signature on it, so that each Thespian ``createActor`` of
    ``cls`` reads it instead of computing it twice (see 8 above). The signature is the one
    ``inspect`` computes; only when it is computed changes."""
    init = cls.__dict__.get("__init__")
    if init is not None:
        init.__signature__ = inspect.signature(init)
    return cls


class DeliveryFailed(Exception):
    """The target address did not take the message: its process is gone."""


class TargetGone(Exception):
    """The target took the message, then its process died before answering."""


# A None that comes back this much before the deadline is a failed delivery, not a timeout.
_EARLY_NONE_MARGIN = 0.05
#: Seconds between liveness checks of an ask's target while waiting for its answer.
LIVENESS_SLICE = 0.1
# The first wait is longer: a None before it ends means Thespian gave up delivering.
_FIRST_SLICE = 0.25
# A reply this much past the deadline counts as no reply (the caller has given up on it).
_LATE_MARGIN = 0.05


def ask_correlated(
    system: Any,
    address: Any,
    data: bytes,
    message_id: int,
    timeout: float,
    *,
    max_size: int,
    alive: Callable[[], bool] | None = None,
) -> tuple[codec.Envelope, FrameMeta] | None:
    """Send ``data`` and wait for the envelope answering ``message_id``.

    Thespian's ``ask`` waits out its whole timeout when the target dies after taking the
    message; with ``alive`` (is the target's process still there?) the wait is cut into slices
    of ``LIVENESS_SLICE`` seconds and fails as soon as the target is gone.

    Returns:
        (the reply envelope, the frame's header), or None on timeout.

    Raises:
        DeliveryFailed: Thespian gave up delivering (the target's process is gone).
        TargetGone: the target died after taking the message, before answering.
    """
    deadline = time.monotonic() + timeout
    wait = timeout if alive is None else min(timeout, _FIRST_SLICE)
    slice_end = time.monotonic() + wait
    raw = system.ask(address, data, wait)
    first = True
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if raw is None:
            if first and slice_end - now > _EARLY_NONE_MARGIN:
                raise DeliveryFailed  # None long before the timeout: Thespian gave up
            first = False
            if remaining <= 0:
                return None
            if alive is not None and not alive():
                raw = system.listen(_EARLY_NONE_MARGIN)  # a reply sent just before dying
                if raw is None:
                    raise TargetGone
                continue
            raw = system.listen(min(remaining, LIVENESS_SLICE) if alive else remaining)
            continue
        if isinstance(raw, bytes):
            found = decode_reply(raw, message_id, max_size=max_size)
            if found is not None:
                if time.monotonic() > deadline + _LATE_MARGIN:
                    # simpleSystemBase ignores ask timeouts and blocks until the handler
                    # returns: a reply after the deadline is a timeout all the same.
                    log.warning(
                        "late_reply_dropped",
                        kind=found[0].message.kind,
                        late_by=round(time.monotonic() - deadline, 3),
                    )
                    return None
                return found
            log.debug("stale_reply_skipped", expected=message_id)
        else:
            log.debug("non_understudy_reply_skipped", type=type(raw).__name__)
        if remaining <= 0:
            return None
        first = False
        raw = system.listen(min(remaining, LIVENESS_SLICE) if alive else remaining)
