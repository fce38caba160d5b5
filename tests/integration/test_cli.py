"""The command line as a user runs it: validate, up, status, ask, stop, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from actors.cli import main
from actors.core.runtime import free_port

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = """\
system: {base: multiprocTCPBase, state_dir: STATE}
root:
  id: root
  children:
    - {id: echo, start: actors.demo:Echo}
    - id: jobs
      type: supervisor
      strategy: simple_one_for_one
      template: {id: job, start: actors.demo:Echo}
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.cli", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
        env=_env(),
        check=False,
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _up(
    tmp_path: Path, topology: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `understudy up` on ``topology`` (its state directory in ``tmp_path/state``)."""
    (tmp_path / "topology.yaml").write_text(topology.replace("STATE", str(tmp_path / "state")))
    return subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "up", *extra],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env() if env is None else env,
    )


@contextmanager
def _until_stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Stop `up` with SIGTERM when the block ends (killed if the block fails or it hangs)."""
    try:
        yield
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class _DefaultTree:
    """A running `understudy up` on the repository's topology.yaml (the embedded model)."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    cwd: Path
    started: str
    """What `up` printed until its tree was shown."""

    def run(self, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        """`understudy run ARGS` against this tree."""
        return subprocess.run(
            [sys.executable, "-m", "actors.cli", "run", *args],
            cwd=self.cwd,
            text=True,
            capture_output=True,
            timeout=120,
            env=self.env,
            stdin=stdin,
            check=False,
        )


@contextmanager
def _default_tree(tmp_path: Path) -> Iterator[_DefaultTree]:
    """Start `understudy up` in ``tmp_path`` on the repository's topology.yaml with no model
    configured; stop it with SIGTERM when the block ends (killed if it does not stop)."""
    (tmp_path / "topology.yaml").write_text((REPO / "topology.yaml").read_text())
    env = {k: v for k, v in _env().items() if not k.startswith(("OPENAI_", "UNDERSTUDY_MODEL"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "up"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    with _until_stopped(proc):
        started = _read_until(proc, r"orchestrator", timeout=60)
        yield _DefaultTree(proc, env, tmp_path, started)


def _read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """Read the process's stdout until it matches ``pattern`` (waiting on the pipe)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk.decode()
        if re.search(pattern, seen):
            return seen
    pytest.fail(f"no output matching {pattern!r} within {timeout} s; output so far:\n{seen}")


def test_validate_accepts_the_repository_topology() -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO / "topology.yaml")])

    assert 0 == result.exit_code, result.output
    assert "valid" in result.output


def test_validate_names_file_line_and_field_of_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("root:\n  id: root\n  strategy: one_for_al\n")

    result = CliRunner().invoke(main, ["validate", str(bad)])

    assert 1 == result.exit_code
    assert f"{bad}:3" in result.output
    assert "root.strategy" in result.output


@pytest.mark.integration
def test_up_serves_status_and_ask_then_stops_on_sigterm_leaving_no_process(tmp_path: Path) -> None:
    proc = _up(tmp_path, TOPOLOGY)
    try:
        _read_until(proc, r"jobs", timeout=60)
        state = f"--state-dir={tmp_path / 'state'}"

        status = _cli("status", state, cwd=tmp_path)
        pids = [int(p) for p in re.findall(r"pid=(\d+)", status.stdout)]
        pong = _cli("ask", "root/echo", "example.ping", '{"token": "t1"}', state, cwd=tmp_path)
        unknown = _cli("ask", "root/nope", "example.ping", "{}", state, cwd=tmp_path)
        ledger = _cli("status", "--ledger", state, cwd=tmp_path)
        proc.send_signal(signal.SIGTERM)
        out_bytes, err_bytes = proc.communicate(timeout=60)
        out, err = out_bytes.decode(), err_bytes.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert 0 == status.returncode, status.stderr
    assert "echo" in status.stdout and "running" in status.stdout
    assert '"token": "t1"' in pong.stdout
    assert "no actor at 'root/nope'" in unknown.stderr
    assert 0 == ledger.returncode, ledger.stderr
    assert "message ledger" in ledger.stdout
    assert "balanced" in " ".join(ledger.stdout.split())
    assert 0 == proc.returncode, err
    assert "stopped (SIGTERM); exit reason: shutdown" in out
    assert not (tmp_path / "state" / "runtime.json").exists()
    assert pids
    assert [] == [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (
            {"OPENAI_API_KEY": "sk-not-sent-anywhere"},
            r"model endpoint: https://api\.openai\.com/v1 model=\S+ \(the provider's default",
        ),
        ({}, r"model endpoint: http://127\.0\.0\.1:\d+/v1 model=\S+ \(the embedded simulator"),
    ],
)
def test_up_names_the_model_endpoint_and_a_key_alone_never_starts_the_simulator(
    tmp_path: Path, configured: dict[str, str], expected: str
) -> None:
    """A key alone means the provider's default endpoint (the tree has no agent, so nothing
    is sent); with nothing configured the embedded simulator runs on loopback."""
    env = {k: v for k, v in _env().items() if not k.startswith(("OPENAI_", "UNDERSTUDY_MODEL"))}
    proc = _up(tmp_path, TOPOLOGY, env={**env, **configured})
    with _until_stopped(proc):
        shown = _read_until(proc, r"model endpoint: .*\)", timeout=60)
        state = json.loads((tmp_path / "state" / "runtime.json").read_text())

    assert re.search(expected, shown), shown
    assert state["model_endpoint"] in shown
    assert 0 == proc.returncode


@pytest.mark.integration
def test_up_serves_prometheus_metrics_on_loopback_when_asked(tmp_path: Path) -> None:
    """`up --metrics-port N`: /metrics on 127.0.0.1:N counts the crashes the test caused."""
    port = free_port()
    tolerant = TOPOLOGY.replace("  id: root\n", "  id: root\n  intensity: 10\n")
    proc = _up(tmp_path, tolerant, "--metrics-port", str(port))
    state = f"--state-dir={tmp_path / 'state'}"
    url = f"http://127.0.0.1:{port}/metrics"
    with _until_stopped(proc):
        shown = _read_until(proc, r"jobs", timeout=60)
        crashes = [_cli("ask", "root/echo", "example.fail", state, cwd=tmp_path) for _ in range(2)]
        pong = _cli("ask", "root/echo", "example.ping", '{"token": "t"}', state, cwd=tmp_path)
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        printed = _cli("metrics", state, cwd=tmp_path)

    assert f"metrics: {url}" in shown
    assert all(c.returncode != 0 for c in crashes)
    assert 0 == pong.returncode, pong.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert 2 == samples[("understudy_child_restarts_total", (("supervisor", "root"),))]
    assert 0 == printed.returncode, printed.stderr
    assert 'understudy_child_restarts_total{supervisor="root"} 2.0' in printed.stdout
    assert (
        2
        == samples[("understudy_child_exits_total", (("reason", "error"), ("supervisor", "root")))]
    )
    assert 0 == proc.returncode


@pytest.mark.integration
def test_run_reports_a_run_still_running_after_its_timeout(tmp_path: Path) -> None:
    """`understudy run --timeout` with no event for that long (the model hangs) says so."""
    with _default_tree(tmp_path) as tree:
        state = json.loads((tmp_path / ".understudy" / "runtime.json").read_text())
        control = state["model_endpoint"].removesuffix("/v1") + "/_control/faults"
        fault = {"faults": [{"kind": "hang", "seconds": 10, "match": "slowly", "count": None}]}
        request = urllib.request.Request(  # noqa: S310 - the embedded model on loopback
            control, data=json.dumps(fault).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert 200 == answer.status
        result = tree.run("--timeout", "3", "write notes slowly")

    assert 1 == result.returncode, result.stdout + result.stderr
    assert "model_call_started" in result.stdout
    assert "still running after 3.0 s" in " ".join(result.stderr.split()), result.stdout


@pytest.mark.integration
def test_up_refuses_a_metrics_port_in_use_and_stops_what_it_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _up(tmp_path, TOPOLOGY, "--metrics-port", str(port))
        _out, err = proc.communicate(timeout=60)

    assert 1 == proc.returncode
    assert f"cannot serve metrics on port {port}" in " ".join(err.decode().split())
    assert not (tmp_path / "state" / "runtime.json").exists()


def test_status_without_a_running_tree_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", f"--state-dir={tmp_path}"])

    assert 1 == result.exit_code
    assert "understudy up" in result.output


@pytest.mark.integration
def test_the_main_job_runs_a_goal_end_to_end_on_the_default_topology(tmp_path: Path) -> None:
    """`understudy up` on the repository's topology.yaml (embedded model), then
    `understudy run` writes the file and prints phases, tool calls and the result."""
    with _default_tree(tmp_path) as tree:
        result = tree.run("write a haiku about supervision to haiku.txt")
        status = _cli("status", cwd=tmp_path)

    assert 0 == result.returncode, result.stdout + result.stderr
    for phase in ("specification", "execution", "evaluation"):
        assert f"{phase} finished" in result.stdout
    assert "name=write_file" in result.stdout
    shown = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line[:1].isdigit()]
    steps = [" ".join(line.split()[:2]).rstrip(":") for line in shown]
    started = steps.index("execution model_call_started")
    assert steps[started : started + 4] == [
        "execution model_call_started",
        "execution model_call",
        "execution tool_call_started",
        "execution tool_call",
    ], steps
    assert re.search(r"execution model_call: .*input_tokens=\d+, output_tokens=\d+", result.stdout)
    assert "(the embedded simulator" in tree.started
    assert "succeeded score 1.00" in result.stdout
    written = list((tmp_path / ".understudy" / "workspaces").glob("*/haiku.txt"))
    assert 1 == len(written)
    assert 3 == len(written[0].read_text().strip().splitlines())
    assert "1 completed" in status.stdout
    assert 0 == tree.proc.returncode


def _written(tmp_path: Path, name: str) -> Path:
    [found] = list((tmp_path / ".understudy" / "workspaces").glob(f"*/{name}"))
    return found


@pytest.mark.integration
def test_each_kind_of_artefact_is_valid_and_an_unknown_goal_fails_through_understudy_run(
    tmp_path: Path,
) -> None:
    """The embedded model on the default topology: each file `understudy run` reports is
    checked here by what it claims to be (the program run, the JSON/YAML/CSV parsed, the
    poem's lines counted); a goal outside what it can do fails and says why."""
    import csv

    import yaml

    goals = {
        "primes.py": "write a python script that prints the first 10 primes to primes.py",
        "person.json": "write a JSON file with the fields name, age and email to person.json",
        "config.yaml": "write a YAML file with the keys host, port and debug to config.yaml",
        "people.csv": "write a CSV file with the columns name, email and city to people.csv",
        "cats.txt": "write a limerick about cats to cats.txt",
        "notes.md": "write notes about restart intensity to notes.md",
    }
    with _default_tree(tmp_path) as tree:
        results = {name: tree.run(goal, "--evolutions", "0") for name, goal in goals.items()}
        refused = tree.run(
            "write a python script that trains a neural network to train.py", "--evolutions", "0"
        )

    for name, result in results.items():
        assert 0 == result.returncode, name + result.stdout + result.stderr
        assert "succeeded score 1.00" in result.stdout
    primes = subprocess.run(
        [sys.executable, str(_written(tmp_path, "primes.py"))],
        text=True,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert [2, 3, 5, 7, 11, 13, 17, 19, 23, 29] == [int(n) for n in primes.stdout.split()]
    person = json.loads(_written(tmp_path, "person.json").read_text())
    assert {"name", "age", "email"} <= set(person)
    config = yaml.safe_load(_written(tmp_path, "config.yaml").read_text())
    assert {"host", "port", "debug"} <= set(config)
    with _written(tmp_path, "people.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert ["name", "email", "city"] == rows[0]
    assert len(rows) > 1
    assert all(3 == len(row) for row in rows)
    limerick = _written(tmp_path, "cats.txt").read_text()
    assert 5 == len(limerick.strip().splitlines())
    assert "cats" in limerick
    assert "restart intensity" in _written(tmp_path, "notes.md").read_text().lower()
    assert 1 == refused.returncode
    assert "failed score 0.00" in refused.stdout
    assert "why: the model refused: I cannot do this goal" in refused.stdout
    assert not list((tmp_path / ".understudy" / "workspaces").glob("*/train.py"))


ACCESS_TOPOLOGY = """\
system: {base: multiprocTCPBase, state_dir: STATE}
root:
  id: root
  children:
    - {id: access, start: "actors.services.access_manager:AccessManager"}
"""


@pytest.mark.integration
def test_the_cli_acts_as_operator_unless_told_and_an_operator_cannot_grant(
    tmp_path: Path,
) -> None:
    proc = _up(tmp_path, ACCESS_TOPOLOGY)
    grant = '{"subject": "mallory", "role": "superuser"}'
    state = f"--state-dir={tmp_path / 'state'}"
    with _until_stopped(proc):
        _read_until(proc, r"access", timeout=60)
        as_operator = _cli("ask", "root/access", "access.grant_role", grant, state, cwd=tmp_path)
        as_admin = _cli(
            "--as",
            "admin",
            "ask",
            "root/access",
            "access.grant_role",
            '{"subject": "bob", "role": "operator"}',
            state,
            cwd=tmp_path,
        )
        as_nobody = _cli("--as", "nobody", "status", state, cwd=tmp_path)

    assert 1 == as_operator.returncode
    assert "PermissionDenied" in as_operator.stderr
    assert "'operator' lacks 'admin.grant'" in as_operator.stderr
    assert 0 == as_admin.returncode, as_admin.stderr
    assert '"operator"' in as_admin.stdout
    assert 1 == as_nobody.returncode
    assert "nobody.key" in as_nobody.stderr


@pytest.mark.integration
def test_up_state_dir_overrides_the_topology_and_hosts_and_status_json_read_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "topology.yaml").write_text(TOPOLOGY.replace("STATE", str(tmp_path / "unused")))
    chosen = tmp_path / "chosen"
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "up", "--state-dir", str(chosen)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        _read_until(proc, r"jobs", timeout=60)
        hosts = _cli("hosts", "--json", f"--state-dir={chosen}", cwd=tmp_path)
        status = _cli("status", "--json", f"--state-dir={chosen}", cwd=tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    assert 0 == hosts.returncode, hosts.stderr
    assert [("leader", "up")] == [(h["name"], h["status"]) for h in json.loads(hosts.stdout)]
    document = json.loads(status.stdout)
    assert {"hosts", "children", "events"} <= set(document)
    echo = next(c for c in document["children"] if c["path"] == "root/echo")
    assert ("running", "leader") == (echo["status"], echo["host"])
    assert not (tmp_path / "unused").exists()
