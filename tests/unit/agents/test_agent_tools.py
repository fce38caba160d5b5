"""The agent's tools: what they need checked, and what they do on a real filesystem."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from actors.agents.agent_tools import (
    OUTPUT_LIMIT,
    READ_LIMIT,
    TMP_DIR,
    ToolArgumentError,
    ToolPlan,
    execute_tool,
    in_workspace,
    plan_tool,
)
from protocols.access import COMMAND_PATH

LS = shutil.which("ls", path=COMMAND_PATH) or "?"


def run(name: str, target: Path | str, ws: Path, **arguments: Any) -> tuple[bool, str, str | None]:
    outcome = execute_tool(name, arguments, str(target), workspace=str(ws), timeout=10.0)
    return outcome.ok, outcome.output, outcome.written


def command(argv: list[str], ws: Path, *, network: bool = False, timeout: float = 10.0) -> Any:
    """Run ``argv`` as run_command does (argv[0] already resolved by plan_tool)."""
    plan = plan_tool("run_command", {"argv": argv}, str(ws))
    return execute_tool(
        "run_command",
        {"argv": list(plan.argv)},
        plan.resource,
        workspace=str(ws),
        timeout=timeout,
        network=network,
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.txt", "/ws/a.txt"),
        ("sub/../a.txt", "/ws/sub/../a.txt"),
        ("/etc/passwd", "/etc/passwd"),
        ("", "/ws"),
    ],
)
def test_relative_paths_are_inside_the_workspace_and_left_for_the_access_manager_to_resolve(
    path: str, expected: str
) -> None:
    assert expected == in_workspace(path, "/ws")


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("read_file", {"path": "a.txt"}, ToolPlan("read", "/ws/a.txt")),
        ("write_file", {"path": "/tmp/x", "content": ""}, ToolPlan("write", "/tmp/x")),
        ("list_directory", {}, ToolPlan("list", "/ws")),
        ("list_directory", {"path": "src"}, ToolPlan("list", "/ws/src")),
        (
            "run_command",
            {"argv": ["ls", "-la"]},
            ToolPlan("execute", LS, (LS, "-la")),
        ),
        (
            "run_command",
            {"argv": ["bin/tool"]},
            ToolPlan("execute", "/ws/bin/tool", ("/ws/bin/tool",)),
        ),
    ],
)
def test_each_tool_needs_its_action_on_its_resource(
    name: str, arguments: dict[str, Any], expected: ToolPlan
) -> None:
    assert expected == plan_tool(name, arguments, "/ws")


@pytest.mark.parametrize(
    ("name", "arguments", "match"),
    [
        ("read_file", {}, "needs a string argument 'path', got missing"),
        ("write_file", {"path": "a"}, "'content', got missing"),
        ("write_file", {"path": 3, "content": ""}, "'path', got int"),
        ("list_directory", {"path": ["a"]}, "'path', got list"),
        ("read_file", {"path": "a\x00"}, "NUL"),
        ("run_command", {"argv": []}, "non-empty list of strings"),
        ("run_command", {"argv": "ls -la"}, "non-empty list of strings"),
        ("run_command", {"argv": ["ls", 3]}, "non-empty list of strings"),
        ("run_command", {"argv": ["no-such-program-here"]}, "no program 'no-such-program-here'"),
    ],
)
def test_bad_arguments_are_refused_before_any_check(
    name: str, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(ToolArgumentError, match=match):
        plan_tool(name, arguments, "/ws")


def test_write_creates_parents_and_read_reads_it_back(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "a.txt"

    wrote = run("write_file", target, tmp_path, content="héllo\n")
    read = run("read_file", target, tmp_path)

    assert (True, f"wrote 6 characters to {target}", str(target)) == wrote
    assert (True, "héllo\n", None) == read


def test_list_marks_directories_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("")
    (tmp_path / "a").mkdir()

    assert (True, "a/\nb.txt", None) == run("list_directory", tmp_path, tmp_path)
    assert (True, "(empty directory)", None) == run("list_directory", tmp_path / "a", tmp_path)


def test_failures_are_error_results_not_exceptions(tmp_path: Path) -> None:
    ok, output, _ = run("read_file", tmp_path / "missing.txt", tmp_path)
    ok_dir, output_dir, _ = run("read_file", tmp_path, tmp_path)

    assert not ok
    assert output.startswith("ERROR FileNotFound: ")
    assert not ok_dir
    assert output_dir.startswith("ERROR IsADirectoryError: ")


def test_a_symlink_in_the_last_component_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    link = tmp_path / "ws" / "link.txt"
    link.parent.mkdir()
    link.symlink_to(secret)

    read = run("read_file", link, tmp_path)
    write = run("write_file", link, tmp_path, content="overwritten")

    assert not read[0]
    assert "secret" not in read[1]
    assert not write[0]
    assert "secret" == secret.read_text()


def test_a_long_file_is_cut_at_the_read_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x" * (READ_LIMIT + 10))

    ok, output, _ = run("read_file", big, tmp_path)

    assert ok
    assert output.startswith("x" * READ_LIMIT + "\n[... the file is longer")


def test_commands_run_in_the_workspace_and_report_failures(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("")

    listed = command(["ls"], tmp_path)
    failed = command(["sh", "-c", "echo oops >&2; exit 3"], tmp_path)
    nowhere = command(["ls"], tmp_path / "missing")

    assert (True, "here.txt\n") == (listed.ok, listed.output)  # ls hides its .tmp
    assert (False, "ERROR CommandFailed: exit status 3\noops") == (failed.ok, failed.output)
    assert not nowhere.ok
    assert nowhere.output.startswith("ERROR NoWorkspace: ")


def test_a_command_gets_no_shell_and_a_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNDERSTUDY_TEST_SECRET", "do-not-leak")

    env = command(["env"], tmp_path)
    literal = command(["echo", "$HOME; rm -rf /"], tmp_path)

    assert env.ok
    variables = dict(line.split("=", 1) for line in env.output.splitlines())
    assert {"PATH", "HOME", "TMPDIR", "LANG"} == set(variables)
    assert str(tmp_path) == variables["HOME"]
    assert str(tmp_path / TMP_DIR) == variables["TMPDIR"]
    assert (tmp_path / TMP_DIR).is_dir()
    assert "$HOME; rm -rf /\n" == literal.output  # no shell expanded or ran anything


def _can_isolate() -> bool:
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, check=False, timeout=10
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_isolate(), reason="this machine cannot create network namespaces")
def test_a_command_has_no_network_unless_granted(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = [
            "python3",
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
        ]

        isolated = command(probe, tmp_path)
        granted = command(probe, tmp_path, network=True)

    assert not isolated.ok
    assert "Error" in isolated.output  # unreachable: its own namespace has no usable network
    assert granted.ok, granted.output


def test_a_command_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    outcome = command(["sleep", "5"], tmp_path, timeout=0.2)

    assert not outcome.ok
    assert outcome.output.startswith("ERROR CommandTimeout: ")
    assert "did not finish within 0.2s" in outcome.output


def test_long_command_output_is_clipped(tmp_path: Path) -> None:
    outcome = command(["head", "-c", str(OUTPUT_LIMIT + 5), "/dev/zero"], tmp_path)

    assert outcome.ok
    assert outcome.output.endswith("[... 5 more characters not shown]")


def test_a_parent_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "sub").mkdir(parents=True)
    outside.mkdir()
    target = ws / "sub" / "a.txt"  # what the access manager allowed (resolved then)
    (ws / "sub").rmdir()
    (ws / "sub").symlink_to(outside)  # swapped after the check

    wrote = run("write_file", target, ws, content="escaped?")
    read = run("read_file", target, ws)
    listed = run("list_directory", ws / "sub", ws)

    assert not wrote[0]
    assert [] == list(outside.iterdir())
    assert not read[0]
    assert not listed[0]


def test_a_symlink_race_on_a_parent_never_escapes_the_workspace(tmp_path: Path) -> None:
    """A thread swaps a parent directory and a symlink to outside, as fast as it can, while
    writes go on: whatever each write's outcome, nothing ever lands outside."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "sub").mkdir(parents=True)
    outside.mkdir()
    stop = threading.Event()

    def swap() -> None:
        real, link = ws / "sub", ws / "sub.link"
        while not stop.is_set():
            with contextlib.suppress(OSError):
                real.rename(ws / "sub.away")
                link.symlink_to(outside)
                link.rename(real)
                real.unlink()
                (ws / "sub.away").rename(real)

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        outcomes = [
            run("write_file", ws / "sub" / f"f{i}.txt", ws, content=str(i))[0] for i in range(300)
        ]
    finally:
        stop.set()
        swapper.join(timeout=10)

    assert [] == list(outside.iterdir())
    assert any(outcomes)  # the race really ran: some writes got through, inside


def test_an_unknown_tool_is_an_error_result(tmp_path: Path) -> None:
    assert (False, "ERROR UnknownTool: no tool 'rm'", None) == run("rm", tmp_path, tmp_path)
