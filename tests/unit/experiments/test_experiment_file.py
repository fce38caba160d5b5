"""Experiment files: a good one loads; a bad one gets one error naming the file, the line and
the field; the published JSON Schema is current and accepts what the loader accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from protocols.errors import ExperimentError
from protocols.experiment_loader import (
    EXPERIMENT_SCHEMA_PATH,
    experiment_json_schema,
    load_experiment,
    render_experiment_json_schema,
)

TOPOLOGY = """\
system: {base: simpleSystemBase}
root:
  id: root
  children:
    - id: svc
      type: supervisor
      children:
        - {id: worker, start: actors.demo:Echo}
"""

GOOD = """\
title: kill the worker under load
seed: 4242
topology: topology.yaml
duration: 3
workload:
  - {kind: messages, to: root/svc/worker, message: {kind: example.ping, body: {token: w}},
     rate: 100}
steady_state:
  - {probe: answers, path: root/svc/worker, within: 1.0}
faults:
  - {kind: kill, target: root/svc/worker, schedule: {every: 3, max_total: 3}}
  - {kind: drop, target: root/svc/worker, message_kind: example.ping, probability: 0.05}
invariants: [no_lost_messages, tree_alive, restart_limits, no_orphans, fail_fast]
report: {out: reports/kill-under-load, formats: [json, junit, html]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "topology.yaml").write_text(TOPOLOGY, encoding="utf-8")
    path = tmp_path / "experiment.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_issue_example_loads_with_its_topology(tmp_path: Path) -> None:
    loaded = load_experiment(_write(tmp_path, GOOD))
    assert "kill the worker under load" == loaded.experiment.title
    assert ["kill", "drop"] == [f.kind for f in loaded.experiment.faults]
    assert "root" == loaded.topology.root.id
    assert str(tmp_path / "topology.yaml") == loaded.topology_file


@pytest.mark.parametrize(
    ("old", "new", "where", "says"),
    [
        ("every: 3", "every: -3", ":11: faults[0].schedule.every:", "> 0"),
        ("kind: kill", "kind: kil", ":11: faults[0].kind:", "got 'kil'"),
        ("rate: 100}", "rate: 100, bogus: 1}", ":7: workload[0].bogus:", "unknown key"),
        ("token: w", "tokn: w", ":6: workload[0].message:", "tokn"),
        (
            "kind: example.ping, body",
            "kind: example.nope, body",
            ":6: workload[0].message:",
            "unknown message kind",
        ),
        ("no_orphans", "no_orphan", ":13: invariants[3]:", "no_orphan"),
        (
            "{kind: drop, target",
            "{kind: drop, point: now, target",
            ":12: faults[1].point:",
            "unknown key",
        ),
        ("{kind: drop, target", "{target", ":12: faults[1].kind:", "missing required key 'kind'"),
        ("duration: 3", "duration: soon", ":4: duration:", "soon"),
        ("topology: topology.yaml", "topology: missing.yaml", ":3: topology:", "not found"),
        (
            "topology: topology.yaml",
            "topology: {root: {id: root, children: [{id: w, start: actors.demo:Nope}]}}",
            ":3: topology.root.children[0].start:",
            "Nope",
        ),
        ("kind: kill, target", "kind: kill, at: 2, target", ":11: faults[0]:", "`at`"),
        ("title: kill", "title: [kill", "", "invalid YAML"),
    ],
)
def test_a_bad_file_gets_one_line_naming_file_line_and_field(
    tmp_path: Path, old: str, new: str, where: str, says: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert where in text
    assert says in text


def test_model_quality_defaults_to_one_and_must_be_between_zero_and_one(tmp_path: Path) -> None:
    default = load_experiment(_write(tmp_path, GOOD)).experiment
    lowered = load_experiment(_write(tmp_path, GOOD + "model_quality: 0.4\n")).experiment

    assert (1.0, 0.4) == (default.model_quality, lowered.model_quality)
    with pytest.raises(ExperimentError, match="model_quality"):
        load_experiment(_write(tmp_path, GOOD + "model_quality: 1.5\n"))


def test_a_missing_file_is_an_experiment_error(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_the_published_schema_is_current() -> None:
    assert render_experiment_json_schema() == EXPERIMENT_SCHEMA_PATH.read_text(encoding="utf-8")


def test_the_schema_accepts_the_example_and_rejects_a_bad_kind(tmp_path: Path) -> None:
    schema = experiment_json_schema()
    data = yaml.safe_load(GOOD)
    jsonschema.validate(data, schema)
    data["faults"][0]["kind"] = "kil"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    assert json.loads(json.dumps(schema)) == schema


def test_host_faults_need_hosts_and_a_target_among_them(tmp_path: Path) -> None:
    with_hosts = GOOD.replace(
        "faults:\n", "hosts: [{name: h1}, {name: h2}]\nfaults:\n  - {kind: kill_host, target: h9}\n"
    )
    with pytest.raises(ExperimentError, match="matches none of the experiment's hosts") as caught:
        load_experiment(_write(tmp_path, with_hosts))
    assert "faults[0].target" in str(caught.value)
    without = GOOD.replace("faults:\n", "faults:\n  - {kind: kill_host, target: h1}\n")
    with pytest.raises(ExperimentError, match="need `hosts`"):
        load_experiment(_write(tmp_path, without))
    ok = with_hosts.replace("target: h9", "target: h*")
    assert 2 == len(load_experiment(_write(tmp_path, ok)).experiment.hosts)
