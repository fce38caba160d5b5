"""Experiments end to end: the runner drives a workload while faults are injected, checks the
invariants, writes the reports, and exits 0 / 1 / 2; the same seed gives the same faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.experiments.hosts import lab_unavailable
from actors.experiments.runner import ExperimentRunner
from actors.model.server import ModelServer
from protocols.experiment_loader import load_experiment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "experiments"


def _topology(base: str, intensity: int = 10) -> dict[str, Any]:
    return {
        "system": {"base": base},
        "root": {
            "id": "root",
            "intensity": intensity,
            "period": 10,
            "children": [
                {
                    "id": "svc",
                    "type": "supervisor",
                    "intensity": intensity,
                    "period": 10,
                    "children": [
                        {"id": "worker", "start": "actors.demo:Echo"},
                        {"id": "spare", "start": "actors.demo:Echo"},
                    ],
                }
            ],
        },
    }


def _write(tmp_path: Path, experiment: dict[str, Any]) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False), encoding="utf-8")
    return path


def _ping(rate: float, timeout: float = 2.0) -> dict[str, Any]:
    return {
        "kind": "messages",
        "to": "root/svc/worker",
        "message": {"kind": "example.ping", "body": {"token": "w"}},
        "rate": rate,
        "timeout": timeout,
    }


def _run(path: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "actors.cli",
        "experiment",
        "run",
        str(path),
        "--out",
        str(out),
    ]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=240, check=False, cwd=ROOT
    )


def _message_faults(journal: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (f["kind"], f["target"], f.get("message_kind"), f.get("ordinal"))
        for f in journal["faults"]
        if f.get("ordinal")
    ]


def test_the_same_seed_gives_the_same_faults_on_simple_system_base(tmp_path: Path) -> None:
    experiment = {
        "title": "message faults, twice",
        "seed": 99,
        "topology": _topology("simpleSystemBase"),
        "duration": 1.5,
        "workload": [_ping(60, timeout=0.2)],
        "steady_state": [{"probe": "answers", "path": "root/svc/worker"}],
        "faults": [
            {"kind": "drop", "target": "root/svc/worker", "probability": 0.1},
            {"kind": "duplicate", "target": "root/svc/worker", "every_nth": 7, "after": 0.5},
        ],
        "invariants": ["no_lost_messages", "tree_alive", "fail_fast", "single_instance"],
        "report": {"formats": ["json"]},
    }
    loaded = load_experiment(_write(tmp_path, experiment))
    first = ExperimentRunner(loaded, out=tmp_path / "one").run()
    second = ExperimentRunner(loaded, out=tmp_path / "two").run()

    assert "completed" == first.status, first.journal["invariants"]
    assert _message_faults(first.journal)
    assert _message_faults(first.journal) == _message_faults(second.journal)
    assert [(f["kind"], f["target"], f["at"] > 0) for f in first.journal["injections"]] == [
        (f["kind"], f["target"], f["at"] > 0) for f in second.journal["injections"]
    ]
    other = ExperimentRunner(loaded, seed=100, out=tmp_path / "three").run()
    assert _message_faults(other.journal) != _message_faults(first.journal)


@pytest.mark.integration
def test_a_tree_built_to_give_up_deviates_with_tree_alive_failed(tmp_path: Path) -> None:
    experiment = {
        "title": "a tree that gives up",
        "seed": 1,
        "topology": _topology("simpleSystemBase", intensity=1),
        "duration": 1.0,
        "workload": [_ping(20)],
        "faults": [{"kind": "raise", "target": "root/svc/worker", "every_nth": 2}],
        "invariants": ["tree_alive", "restart_limits"],
        "report": {"formats": ["json", "junit", "html"]},
    }
    result = _run(_write(tmp_path, experiment), tmp_path / "out")

    assert 1 == result.returncode, result.stdout + result.stderr
    journal = json.loads((tmp_path / "out" / "journal.json").read_text(encoding="utf-8"))
    assert "deviated" == journal["status"]
    assert not journal["invariants"]["tree_alive"]["ok"]
    assert journal["invariants"]["restart_limits"]["ok"], journal["invariants"]["restart_limits"]
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()  # noqa: S314 - our own file
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert "tree_alive" in failed
    assert "FAILED" in result.stdout and "tree_alive" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"duration": -1}, ": duration: expected a number > 0"),
        ({"faults": [{"kind": "explode", "target": "root"}]}, "faults[0].kind:"),
    ],
)
def test_a_bad_file_exits_2_with_one_line(
    tmp_path: Path, change: dict[str, Any], where: str
) -> None:
    experiment = {
        "title": "bad",
        "topology": _topology("simpleSystemBase"),
        "duration": 1,
        **change,
    }
    result = _run(_write(tmp_path, experiment), tmp_path / "out")

    assert 2 == result.returncode
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 == len(lines), result.stderr
    assert "experiment.yaml" in lines[0] and where in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_the_kill_under_load_example_holds_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _run(EXAMPLES / "kill-under-load.yaml", out)

    journal = json.loads((out / "journal.json").read_text(encoding="utf-8"))
    assert 0 == result.returncode, json.dumps(journal["invariants"], indent=1) + result.stderr
    kills = [f for f in journal["faults"] if f["kind"] == "kill"]
    assert [3, 6, 9] == [round(f["at"] - kills[0]["at"] + 3) for f in kills]
    assert all(v["ok"] for v in journal["invariants"].values())
    assert journal["ledger"]["total"]["dropped_by_fault"] > 0
    recovered = [r for r in journal["recoveries"] if r["fault_kind"] == "kill"]
    assert 3 == len(recovered)
    assert all(r["fault_to_told"] is not None and r["fault_to_steady"] for r in recovered)
    history = (out / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert {"invoke", "ok"} <= {json.loads(line)["type"] for line in history}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "http://" not in html


@pytest.mark.integration
def test_replay_applies_the_recorded_injections(tmp_path: Path) -> None:
    experiment = {
        "title": "kills to replay",
        "seed": 5,
        "topology": _topology("multiprocTCPBase"),
        "duration": 3,
        "workload": [_ping(20)],
        "faults": [
            {"kind": "kill", "target": "root/svc/*", "pick": "one", "schedule": {"every": 1}}
        ],
        "invariants": ["tree_alive", "no_orphans"],
        "report": {"formats": ["json"]},
    }
    path = _write(tmp_path, experiment)
    first = _run(path, tmp_path / "first", "--seed", "8")
    assert 0 == first.returncode, first.stdout + first.stderr
    recorded = json.loads((tmp_path / "first" / "journal.json").read_text(encoding="utf-8"))
    replay = _run(path, tmp_path / "again", "--replay", str(tmp_path / "first" / "journal.json"))
    assert 0 == replay.returncode, replay.stdout + replay.stderr
    replayed = json.loads((tmp_path / "again" / "journal.json").read_text(encoding="utf-8"))

    def faults(journal: dict[str, Any]) -> list[tuple[str, str, int]]:
        return [(f["kind"], f["target"], f["count"]) for f in journal["faults"]]

    assert faults(recorded) == faults(replayed)
    assert 2 == len(faults(recorded))


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path) -> None:
    result = _run(EXAMPLES / "kill-under-load.yaml", tmp_path / "out", "--dry-run")

    assert 0 == result.returncode, result.stderr
    assert result.stdout.count("kill root/svc/worker") == 3
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_crash_points_hangs_and_reorders_from_a_file_hold_the_invariants(tmp_path: Path) -> None:
    topology = _topology("multiprocTCPBase")
    topology["root"]["children"][0]["children"].append(
        {"id": "front", "start": "actors.demo:Relay", "args": {"to": "root/svc/worker"}}
    )
    experiment = {
        "title": "faults inside the actors",
        "seed": 11,
        "topology": topology,
        "duration": 3,
        "workload": [{**_ping(30, timeout=3), "to": "root/svc/front"}],
        "faults": [
            {"kind": "kill", "target": "root/svc/worker", "point": "after_handler", "nth": 20},
            {"kind": "hang", "target": "root/svc/worker", "seconds": 0.2, "nth": 5, "at": 1},
            {"kind": "reorder", "target": "root/svc/worker", "window": 3, "after": 2},
            {"kind": "start_failure", "target": "root/svc/worker", "max_total": 1},
        ],
        "invariants": ["no_lost_messages", "tree_alive", "fail_fast", "single_instance"],
        "report": {"formats": ["json"]},
    }
    result = ExperimentRunner(load_experiment(_write(tmp_path, experiment)), out=tmp_path).run()

    assert "completed" == result.status, result.journal["invariants"]
    exits = [e for e in result.journal["events"] if e["event"] == "child_exited"]
    assert exits  # each incarnation of the worker is killed at its 20th ping
    assert {"killed"} == {e["reason"] for e in exits}
    kinds = {f["kind"] for f in result.journal["injections"]}
    assert {"kill", "hang", "reorder", "start_failure"} == kinds
    failed = [e for e in result.journal["events"] if e["event"] == "start_failed"]
    assert 1 == len(failed)
    assert "injected start failure" in failed[0]["reason"]


@pytest.mark.integration
def test_the_429_storm_example_holds_the_model_budget(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _run(EXAMPLES / "429-storm.yaml", out)

    journal = json.loads((out / "journal.json").read_text(encoding="utf-8"))
    assert 0 == result.returncode, json.dumps(journal["invariants"], indent=1) + result.stderr
    limited = [r for r in journal["model_requests"] if r["status"] == 429]
    # Three injections of three 429s each: the first burst is served in full; after it the
    # endpoint's breaker, shared by every agent (3 failures, 5 s cooldown), keeps the agents
    # off the model but for one trial call per cooldown, so later bursts are only begun.
    assert 3 <= len(limited) <= 9
    assert journal["invariants"]["llm_budget"]["ok"]
    assert journal["workload"]["operations"] >= 5


@pytest.mark.integration
def test_the_host_loss_example_restarts_the_lost_workers_on_the_other_host(
    tmp_path: Path,
) -> None:
    unavailable = lab_unavailable("netns")
    if unavailable is not None:
        pytest.skip(f"network namespaces cannot be made here: {unavailable}")
    out = tmp_path / "report"
    result = _run(EXAMPLES / "host-loss.yaml", out)

    journal = json.loads((out / "journal.json").read_text(encoding="utf-8"))
    assert 0 == result.returncode, json.dumps(journal["invariants"], indent=1) + result.stderr
    (killed,) = [f["target"] for f in journal["faults"] if f["kind"] == "kill_host"]
    events = journal["events"]
    assert any(e["event"] == "host_down" and e["host"] == killed for e in events)
    lost = [e for e in events if e["event"] == "child_exited" and e["reason"] == "noconnection"]
    restarted_after = (
        [e for e in events if e["event"] == "child_restarted" and e["at"] > lost[0]["at"]]
        if lost
        else []
    )
    assert all(e["host"] != killed for e in restarted_after)
    (recovery,) = journal["recoveries"]
    assert recovery["fault_to_told"] is not None and recovery["fault_to_told"] < 5.0
    # The tree stopped in order (workarounds.EXIT_GRACE), not cut short by the guardian's bound.
    assert "orderly_shutdown_failed" not in result.stderr
    assert not [line for line in _netns_list() if "usx-" in line]


@pytest.mark.integration
def test_a_short_host_pause_on_loopback_is_not_a_host_loss(tmp_path: Path) -> None:
    experiment = {
        "title": "a host paused for 1 s",
        "seed": 3,
        "network": "loopback",
        "hosts": [{"name": "m1", "capabilities": {"zone": "edge"}}],
        "topology": {
            "system": {"base": "multiprocTCPBase"},
            "root": {
                "id": "root",
                "children": [
                    {
                        "id": "edge",
                        "start": "actors.demo:Echo",
                        "placement": {"capabilities": {"zone": "edge"}},
                    }
                ],
            },
        },
        "duration": 3,
        "faults": [{"kind": "pause_host", "target": "m1", "seconds": 1.0, "at": 0.5}],
        "invariants": ["tree_alive", "single_instance"],
        "report": {"formats": ["json"]},
    }
    result = ExperimentRunner(load_experiment(_write(tmp_path, experiment)), out=tmp_path).run()

    assert "completed" == result.status, result.journal
    assert not [e for e in result.journal["events"] if e["event"] == "host_down"]
    assert ["pause_host"] == [f["kind"] for f in result.journal["faults"]]


def _netns_list() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return listed.stdout.splitlines()


@pytest.mark.integration
def test_model_faults_on_another_endpoint_go_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = {
        "title": "429s through the proxy",
        "seed": 5,
        "topology": str(ROOT / "topology.yaml"),
        "duration": 4,
        "workload": [
            {
                "kind": "goals",
                "goals": ["write a haiku about supervision to h.txt"],
                "rate": 0.5,
                "timeout": 60,
            }
        ],
        "faults": [
            {"kind": "llm_error", "error": "429", "retry_after": 0.3, "count": 2, "at": 0.1}
        ],
        "invariants": ["tree_alive", "fail_fast", "llm_budget"],
        "report": {"formats": ["json"]},
    }
    with ModelServer() as endpoint:
        url = endpoint.url
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "a-real-key")
        result = ExperimentRunner(load_experiment(_write(tmp_path, experiment)), out=tmp_path).run()
        served = endpoint.stats().request_log

    assert "completed" == result.status, result.journal["invariants"]
    limited = [r for r in result.journal["model_requests"] if r["status"] == 429]
    assert 2 == len(limited)
    assert all(r.status == 200 for r in served)  # the 429s came from the proxy
    assert url == os.environ["OPENAI_BASE_URL"]


@pytest.mark.integration
@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrent_clients_have_requests_in_flight_together(
    tmp_path: Path, concurrency: int
) -> None:
    """The rendezvous answers no request until four wait: four clients meet, one client's
    requests each time out alone; either way a kill is injected on its schedule."""
    topology = _topology("multiprocTCPBase")
    topology["root"]["children"][0]["children"].append(
        {"id": "meet", "start": "tests.integration._workers:Rendezvous"}
    )
    experiment = {
        "title": "clients at once",
        "seed": 5,
        "topology": topology,
        "duration": 2,
        "workload": [
            {
                "kind": "messages",
                "to": "root/svc/meet",
                "message": {"kind": "test.meet", "body": {"n": 4}},
                "rate": 8,
                "timeout": 1.5,
                "concurrency": concurrency,
            }
        ],
        "faults": [{"kind": "kill", "target": "root/svc/spare", "at": 0.5}],
        "invariants": ["tree_alive"],
        "report": {"formats": ["json"]},
    }
    result = ExperimentRunner(load_experiment(_write(tmp_path, experiment)), out=tmp_path).run()

    workload = result.journal["workload"]
    assert 16 == workload["operations"] + workload["skipped"]
    if concurrency == 4:
        assert 16 == workload["ok"], workload
    else:  # each waits out its 1.5 s alone; those due meanwhile are skipped at the end
        assert 0 == workload["ok"], workload
        assert workload["skipped"] >= 12, workload
    history = [
        json.loads(line)
        for line in (tmp_path / "history.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    first_op = next(h["time"] for h in history if h["process"] != "nemesis")
    kill = next(h["time"] for h in history if h["process"] == "nemesis" and h["f"] == "kill")
    assert kill - first_op < 1.0  # at 0.5 s, not held up by an operation that waits 1.5 s
