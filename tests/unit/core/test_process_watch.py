"""ProcessWatch: the Runtime's cheap "is that actor's process still running?"."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from actors.core.workarounds import ProcessWatch, process_alive


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    code = "import sys; sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _ended_unreaped(proc: subprocess.Popen[bytes]) -> None:
    """Block until ``proc`` has ended, leaving it a zombie (not reaped)."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)


def test_a_running_process_is_alive_and_stays_so(child: subprocess.Popen[bytes]) -> None:
    watch = ProcessWatch()
    try:
        assert watch.alive(child.pid)
        assert watch.alive(child.pid)  # the second answer comes from the kept pidfd
        assert process_alive(child.pid)
    finally:
        watch.close()


def test_an_ended_process_is_not_alive_even_before_it_is_reaped(
    child: subprocess.Popen[bytes],
) -> None:
    watch = ProcessWatch()
    try:
        assert watch.alive(child.pid)
        child.kill()
        _ended_unreaped(child)

        assert not watch.alive(child.pid)
        assert not process_alive(child.pid)  # the fallback agrees: a zombie counts as dead
    finally:
        watch.close()


def test_an_orderly_exit_is_seen_too(child: subprocess.Popen[bytes]) -> None:
    watch = ProcessWatch()
    try:
        assert watch.alive(child.pid)
        assert child.stdin is not None
        child.stdin.close()  # the child reads to the end of its input, then exits
        _ended_unreaped(child)

        assert not watch.alive(child.pid)
    finally:
        watch.close()


def test_a_reaped_pid_answers_as_the_proc_file_does(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait(timeout=10)  # reaped: the pid names no process now, unless it was reused
    watch = ProcessWatch()
    try:
        assert watch.alive(child.pid) == process_alive(child.pid)
    finally:
        watch.close()


def test_after_close_the_watch_opens_its_pidfds_again(child: subprocess.Popen[bytes]) -> None:
    watch = ProcessWatch()
    assert watch.alive(child.pid)
    watch.close()
    try:
        assert watch.alive(child.pid)
    finally:
        watch.close()
