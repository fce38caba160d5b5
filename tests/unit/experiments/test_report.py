"""The reports: journal.json round-trips, junit.xml parses with a testcase per invariant and
probe, report.html is one self-contained file whose plots are PNGs, percentiles hold their
order."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.experiments.report import percentiles, render_html, render_junit, write_reports
from protocols.ledger import LEDGER_EVENTS

_LEDGER = dict.fromkeys(LEDGER_EVENTS, 3)


def _journal(
    invariants: dict[str, bool], probes: list[bool], status: str = "completed"
) -> dict[str, Any]:
    return {
        "title": "a <report> & its tests",
        "status": status,
        "seed": 7,
        "abort_reason": "it broke" if status == "aborted" else None,
        "versions": {"understudy": "0", "thespian": "4.0.1", "python": "3.11"},
        "base": "multiprocTCPBase",
        "started_at": "2026-12-04T00:00:00+00:00",
        "duration": 5,
        "elapsed": 7.5,
        "steady_state": [
            {
                "probe": "answers",
                "path": "root/w",
                "phase": "after",
                "ok": ok,
                "detail": "d",
                "seconds": 0.01,
            }
            for ok in probes
        ],
        "faults": [
            {"id": "f1", "kind": "kill", "target": "root/w", "at": 1.0, "until": None},
            {"id": "f2", "kind": "drop", "target": "root/w", "at": 0.5, "until": 4.0},
            {
                "id": "f2",
                "kind": "drop",
                "target": "root/w",
                "at": 0.7,
                "until": None,
                "message_kind": "example.ping",
                "ordinal": 3,
            },
        ],
        "invariants": {
            name: {"ok": ok, "detail": f"{name} detail", "counterexample": None if ok else {"x": 1}}
            for name, ok in invariants.items()
        },
        "ledger": {
            "total": _LEDGER,
            "by_kind": {"example.ping": _LEDGER},
            "balanced": True,
            "unreported": 0,
        },
        "recoveries": [
            {
                "fault_id": "f1",
                "fault_kind": "kill",
                "target": "root/w",
                "fault_to_told": 0.01,
                "told_to_answering": 0.02,
                "fault_to_steady": 0.05,
            }
        ],
        "events": [
            {
                "at": 1.01,
                "event": "child_exited",
                "path": "root/w",
                "reason": "killed",
                "host": None,
            }
        ],
        "workload": {"operations": 2, "ok": 1, "fail": 1, "info": 0, "skipped": 0},
    }


_HISTORY = [
    {"index": 0, "op": 1, "time": 0.1, "process": "w", "type": "invoke", "f": "ask", "value": 1},
    {
        "index": 1,
        "op": 1,
        "time": 0.2,
        "process": "w",
        "type": "ok",
        "f": "ask",
        "value": 1,
        "latency": 0.1,
    },
    {"index": 2, "op": 2, "time": 1.1, "process": "w", "type": "invoke", "f": "ask", "value": 2},
    {
        "index": 3,
        "op": 2,
        "time": 2.1,
        "process": "w",
        "type": "fail",
        "f": "ask",
        "value": 2,
        "latency": 1.0,
    },
]


@settings(max_examples=25)
@given(
    invariants=st.dictionaries(
        st.sampled_from(["tree_alive", "fail_fast", "no_orphans"]), st.booleans()
    ),
    probes=st.lists(st.booleans(), max_size=4),
    aborted=st.booleans(),
)
def test_junit_has_a_testcase_per_invariant_and_probe(
    invariants: dict[str, bool], probes: list[bool], aborted: bool
) -> None:
    journal = _journal(invariants, probes, "aborted" if aborted else "completed")
    suite = ET.fromstring(render_junit(journal))  # noqa: S314 - our own output

    cases = list(suite.iter("testcase"))
    failed = [c for c in cases if c.find("failure") is not None]
    assert (
        len(invariants) + len(probes) + int(aborted) == len(cases) == int(suite.get("tests", "0"))
    )
    assert sum(not ok for ok in invariants.values()) + sum(not ok for ok in probes) == len(failed)
    assert str(len(failed)) == suite.get("failures")
    assert int(aborted) == int(suite.get("errors", "0"))


@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=200))
def test_percentiles_are_ordered_and_within_the_values(values: list[float]) -> None:
    p = percentiles(values)
    assert min(values) <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"] == max(values)


def test_the_html_is_self_contained_and_its_plots_are_pngs() -> None:
    text = render_html(_journal({"tree_alive": True, "fail_fast": False}, [True]), _HISTORY)

    assert "http://" not in text and "https://" not in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) >= 2  # a recovery histogram and the timeline
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "a &lt;report&gt; &amp; its tests" in text
    assert "FAILED" in text


def test_reports_are_written_and_the_journal_round_trips(tmp_path: Path) -> None:
    journal = _journal({"tree_alive": True}, [True])
    paths = write_reports(tmp_path, journal, _HISTORY, ["json", "junit", "html"])

    assert {"journal.json", "history.jsonl", "junit.xml", "report.html"} == {p.name for p in paths}
    assert journal == json.loads((tmp_path / "journal.json").read_text(encoding="utf-8"))
    lines = (tmp_path / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert _HISTORY == [json.loads(line) for line in lines]


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    journal = _journal({}, [], "aborted")
    journal.update(faults=[], recoveries=[], events=[], ledger={})
    write_reports(tmp_path, journal, [], ["junit", "html"])
    assert "No ledger" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pdf"):
        write_reports(tmp_path, _journal({}, []), [], ["pdf"])
