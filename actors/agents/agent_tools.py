"""The agent's tools: what each one needs from the access manager, and running it.

Tools (the names and JSON schemas the model sees come from ``protocols.prompts``)
    read_file(path)            action ``read`` on the path; the file's text (at most 64 KiB)
    write_file(path, content)  action ``write`` on the path; creates missing parent directories
    list_directory(path)       action ``list`` on the path; one entry per line, ``/`` after dirs
    run_command(argv)          action ``execute`` on the program (argv[0], looked up in
                               ``COMMAND_PATH`` unless it has a ``/``); no shell; only with
                               allow_commands

Every check names the tool too (``CheckAccess.tool``): the access manager checks the tool glob
AND the path, program or network scope.

Files: relative paths are taken inside the run's workspace; an empty ``list_directory`` path is
the workspace itself. The access manager resolves the path (``..``, symlinks) when it decides;
the tool then walks that resolved path from ``/`` one component at a time, each opened relative
to its parent's descriptor with ``O_NOFOLLOW`` (openat-style), so a directory swapped for a
symlink after the check makes the call fail instead of leading elsewhere.

Commands: argv runs directly (no shell), with the workspace as its working directory, a
scrubbed environment (``PATH`` = ``COMMAND_PATH``, ``HOME`` = the workspace, ``TMPDIR`` = the
agent's private temp directory ``<workspace>/.tmp``, ``LANG``), a time limit, and, unless the
agent's grant has network on, in a network namespace of its own (no interface but a loopback
that is down): ``unshare(CLONE_NEWNET)``, or with a user namespace where only that is allowed.
Where neither can be created the command is refused (``NetworkIsolationUnavailable``), never
run with the network.

``plan_tool`` is pure (what to check); ``execute_tool`` does the I/O. Neither raises for bad
input or failing I/O: each failure is a ``ToolOutcome`` with ``ok`` False and an
``ERROR <Name>: <message>`` text, which is what the model reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import posixpath
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from protocols.access import COMMAND_PATH
from protocols.prompts import format_tool_error

__all__ = [
    "COMMAND_TIMEOUT",
    "OUTPUT_LIMIT",
    "READ_LIMIT",
    "TMP_DIR",
    "TOOLS",
    "ToolArgumentError",
    "ToolOutcome",
    "ToolPlan",
    "execute_tool",
    "in_workspace",
    "plan_tool",
]

READ_LIMIT: Final = 64 * 1024
OUTPUT_LIMIT: Final = 16 * 1024
COMMAND_TIMEOUT: Final = 30.0

#: Each tool's required string arguments and the access action it needs.
TOOLS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "read_file": (("path",), "read"),
    "write_file": (("path", "content"), "write"),
    "list_directory": ((), "list"),
    "run_command": ((), "execute"),
}

#: The agent's private temp directory, inside its workspace.
TMP_DIR: Final = ".tmp"
_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWUSER: Final = 0x10000000


@dataclass(frozen=True)
class ToolPlan:
    """What a tool call needs checked: ``action`` on ``resource`` (an absolute path, or the
    program's absolute path), and for run_command the whole ``argv`` it will run."""

    action: str
    resource: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call: the text the model reads, and a file it wrote, if any."""

    ok: bool
    output: str
    written: str | None = None


class ToolArgumentError(ValueError):
    """A tool call's arguments do not fit the tool (missing, not text, NUL characters)."""


def in_workspace(path: str, workspace: str) -> str:
    """Return ``path`` as an absolute path: relative paths (and ``""``) are inside ``workspace``."""
    if not path:
        return workspace
    if posixpath.isabs(path):
        return path
    return posixpath.join(workspace, path)


def plan_tool(name: str, arguments: dict[str, Any], workspace: str) -> ToolPlan:
    """Return what must be checked before ``name`` runs with ``arguments``.

    Raises:
        ToolArgumentError: a required argument is missing or not a string, a path or command
            contains a NUL character, or a command is empty.
        KeyError: ``name`` is not a tool.
    """
    required, action = TOOLS[name]
    for key in required:
        value = arguments.get(key)
        if not isinstance(value, str):
            got = "missing" if value is None else type(value).__name__
            msg = f"{name} needs a string argument {key!r}, got {got}"
            raise ToolArgumentError(msg)
    if name == "run_command":
        argv = arguments.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and "\x00" not in a for a in argv)
            or not argv[0]
        ):
            msg = "run_command needs 'argv': a non-empty list of strings without NUL characters"
            raise ToolArgumentError(msg)
        program = _program(argv[0], workspace)
        return ToolPlan(action, program, (program, *argv[1:]))
    path = arguments.get("path", "")
    if not isinstance(path, str):
        msg = f"{name} needs a string argument 'path', got {type(path).__name__}"
        raise ToolArgumentError(msg)
    if "\x00" in path:
        msg = f"{name}: the path contains a NUL character"
        raise ToolArgumentError(msg)
    return ToolPlan(action, in_workspace(path, workspace))


def _program(name: str, workspace: str) -> str:
    """The absolute path of the program ``name`` (``COMMAND_PATH`` lookup unless it has a ``/``).

    Raises:
        ToolArgumentError: no such program.
    """
    if "/" in name:
        return posixpath.normpath(in_workspace(name, workspace))
    found = shutil.which(name, path=COMMAND_PATH)
    if found is None:
        msg = f"no program {name!r} in {COMMAND_PATH}"
        raise ToolArgumentError(msg)
    return found


def _error(name: str, message: str) -> ToolOutcome:
    return ToolOutcome(ok=False, output=format_tool_error(name, message))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def execute_tool(
    name: str,
    arguments: dict[str, Any],
    target: str,
    *,
    workspace: str,
    timeout: float,
    network: bool = False,
) -> ToolOutcome:
    """Run tool ``name`` on ``target`` (the resolved path, or the program).

    Args:
        name: the tool.
        arguments: the call's arguments (``content`` for write_file, ``argv`` for run_command).
        target: what the access manager allowed: the resolved absolute path, or the program.
        workspace: the run's workspace (the working directory of commands).
        timeout: seconds a command may run.
        network: the agent's grant has network on (else a command has none).

    Returns:
        The outcome; failures are outcomes too, never exceptions.
    """
    try:
        if name == "read_file":
            return _read(target)
        if name == "write_file":
            return _write(target, str(arguments["content"]))
        if name == "list_directory":
            return _list(target)
        if name == "run_command":
            argv = [target, *[str(a) for a in arguments["argv"][1:]]]
            return _run(argv, workspace, timeout, network=network)
    except OSError as exc:
        error = "FileNotFound" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        return _error(error, f"{target}: {exc.strerror or exc}")
    return _error("UnknownTool", f"no tool {name!r}")


@contextlib.contextmanager
def _beneath(path: str, *, create_parents: bool = False) -> Iterator[tuple[int, str]]:
    """Open every directory of the absolute ``path`` from ``/`` with ``O_NOFOLLOW``, each
    relative to the one before; yield (descriptor of the parent directory, last component).

    Raises:
        OSError: a component is missing (unless ``create_parents``), not a directory, or a
            symlink (ELOOP: it was swapped in after the check).
    """
    parts = [p for p in path.split("/") if p]
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create_parents:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd, parts[-1] if parts else "."
    finally:
        os.close(fd)


def _read(path: str) -> ToolOutcome:
    with _beneath(path) as (parent, name):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(READ_LIMIT + 1)
    text = data[:READ_LIMIT].decode("utf-8", errors="replace")
    if len(data) > READ_LIMIT:
        text += f"\n[... the file is longer than {READ_LIMIT} bytes; the rest is not shown]"
    return ToolOutcome(ok=True, output=text)


def _write(path: str, content: str) -> ToolOutcome:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with _beneath(path, create_parents=True) as (parent, name):
        fd = os.open(name, flags, 0o644, dir_fd=parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return ToolOutcome(ok=True, output=f"wrote {len(content)} characters to {path}", written=path)


def _list(path: str) -> ToolOutcome:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with _beneath(path) as (parent, name):
        fd = os.open(name, flags, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            names = sorted(
                e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries
            )
    finally:
        os.close(fd)
    return ToolOutcome(ok=True, output="\n".join(names) if names else "(empty directory)")


def _isolate_network() -> None:
    """In the child, before exec: a network namespace of its own (loopback only, down)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) == 0:
        return
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        return
    errno = ctypes.get_errno()
    raise OSError(errno, f"cannot create a network namespace: {os.strerror(errno)}")


def _run(argv: list[str], workspace: str, timeout: float, *, network: bool) -> ToolOutcome:
    if not os.path.isdir(workspace):
        return _error("NoWorkspace", f"the workspace {workspace} is not a directory")
    tmp = os.path.join(workspace, TMP_DIR)
    os.makedirs(tmp, exist_ok=True)
    env = {"PATH": COMMAND_PATH, "HOME": workspace, "TMPDIR": tmp, "LANG": "C.UTF-8"}
    try:
        # A session of its own, so that a timeout kills the command's children too.
        proc = subprocess.Popen(  # noqa: S603 - argv checked by the access manager, no shell
            argv,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if network else _isolate_network,  # noqa: PLW1509 - exec follows
        )
    except subprocess.SubprocessError as exc:
        return _error(
            "NetworkIsolationUnavailable",
            f"{exc}; refusing to run {argv[0]} with the network (grant network to run it)",
        )
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _error("CommandTimeout", f"{argv!r} did not finish within {timeout:g}s")
    out = stdout.decode("utf-8", errors="replace")
    text = _clip(out, OUTPUT_LIMIT)
    if proc.returncode != 0:
        return ToolOutcome(
            ok=False,
            output=format_tool_error(
                "CommandFailed", f"exit status {proc.returncode}\n{text}".rstrip()
            ),
        )
    return ToolOutcome(ok=True, output=text or "(no output)")
