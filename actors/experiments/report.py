"""An experiment's reports: ``journal.json`` and ``history.jsonl`` (json), ``junit.xml`` (junit)
and ``report.html`` (html: one self-contained file, its plots inline PNGs drawn with
matplotlib).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["FORMATS", "percentiles", "render_html", "render_junit", "write_reports"]

FORMATS = ("json", "junit", "html")
_MEASURES = (
    ("fault_to_told", "fault -> supervisor told"),
    ("told_to_answering", "told -> replacement answering"),
    ("fault_to_steady", "fault -> steady state again"),
)
_RESTART_EVENTS = ("child_exited", "child_restarted", "start_failed", "host_down")


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` by the nearest-rank method (the smallest value with
    at least p% of the values at or below it)."""
    ordered = sorted(values)
    if not ordered:
        return {}
    out: dict[str, float] = {}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[name] = ordered[rank - 1]
    out["max"] = ordered[-1]
    return out


def write_reports(
    out: Path,
    journal: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    formats: Sequence[str],
) -> list[Path]:
    """Write the reports of ``formats`` into ``out`` (created); return the files written.

    Raises:
        ValueError: a format is unknown.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        msg = f"unknown report format(s) {unknown}; known: {', '.join(FORMATS)}"
        raise ValueError(msg)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        path = out / "journal.json"
        path.write_text(json.dumps(journal, indent=2, default=str) + "\n", encoding="utf-8")
        lines = "".join(json.dumps(op, default=str) + "\n" for op in history)
        (out / "history.jsonl").write_text(lines, encoding="utf-8")
        written += [path, out / "history.jsonl"]
    if "junit" in formats:
        path = out / "junit.xml"
        path.write_text(render_junit(journal), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = out / "report.html"
        path.write_text(render_html(journal, history), encoding="utf-8")
        written.append(path)
    return written


# --- JUnit -------------------------------------------------------------------------------------


def render_junit(journal: Mapping[str, Any]) -> str:
    """One testsuite: a testcase per invariant and per probe result (and an ``experiment``
    error when it was aborted)."""
    suite = ET.Element("testsuite", name=str(journal.get("title", "experiment")))
    properties = ET.SubElement(suite, "properties")
    for key in ("seed", "status", "base"):
        ET.SubElement(properties, "property", name=key, value=str(journal.get(key)))
    tests = failures = errors = 0
    for name, verdict in (journal.get("invariants") or {}).items():
        tests += 1
        case = ET.SubElement(suite, "testcase", classname="invariant", name=name)
        if not verdict["ok"]:
            failures += 1
            failure = ET.SubElement(case, "failure", message=str(verdict["detail"]))
            failure.text = json.dumps(verdict.get("counterexample"), indent=2, default=str)
    for probe in journal.get("steady_state") or []:
        tests += 1
        name = f"{probe['probe']} {probe.get('path') or ''} {probe['phase']}".replace("  ", " ")
        case = ET.SubElement(suite, "testcase", classname="steady_state", name=name)
        if not probe["ok"]:
            failures += 1
            ET.SubElement(case, "failure", message=str(probe["detail"]))
    if journal.get("status") == "aborted":
        tests += 1
        errors += 1
        case = ET.SubElement(suite, "testcase", classname="experiment", name="experiment")
        ET.SubElement(case, "error", message=str(journal.get("abort_reason") or "aborted"))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("time", str(journal.get("elapsed", 0)))
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )


# --- HTML --------------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _timeline(journal: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    ends = [op for op in history if op.get("type") in ("ok", "fail") and op["process"] != "nemesis"]
    figure, axis = plt.subplots(figsize=(10, 3.2))
    for kind, colour in (("ok", "tab:green"), ("fail", "tab:red")):
        xs = [float(op["time"]) for op in ends if op["type"] == kind]
        ys = [float(op.get("latency") or 0.0) for op in ends if op["type"] == kind]
        if xs:
            axis.scatter(xs, ys, s=6, c=colour, label=f"operation {kind}")
    shaded = False
    for fault in journal.get("faults") or []:
        if fault.get("ordinal"):
            continue
        label = None if shaded else "fault active"
        if fault.get("until") is not None:
            axis.axvspan(fault["at"], fault["until"], color="tab:orange", alpha=0.15, label=label)
        else:
            axis.axvline(fault["at"], color="tab:orange", linewidth=1.5, label=label)
        shaded = True
    marked = False
    for event in journal.get("events") or []:
        if event["event"] in _RESTART_EVENTS:
            label = None if marked else "exit / restart"
            axis.axvline(event["at"], color="tab:blue", linestyle=":", label=label)
            marked = True
    axis.set_xlabel("seconds since the start")
    axis.set_ylabel("latency (s)")
    axis.set_title("timeline")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper right", fontsize="small")
    return _png(figure)


def _recoveries(journal: Mapping[str, Any]) -> str:
    records = journal.get("recoveries") or []
    if not records:
        return "<p>No fault that a recovery is measured for (kill, pause, host faults).</p>"
    rows = []
    parts = []
    for key, title in _MEASURES:
        by_kind: dict[str, list[float]] = {}
        for record in records:
            if record.get(key) is not None:
                by_kind.setdefault(record["fault_kind"], []).append(float(record[key]))
        if not by_kind:
            parts.append(f"<p>{html.escape(title)}: no measurement.</p>")
            continue
        figure, axis = plt.subplots(figsize=(5, 2.6))
        for kind, values in sorted(by_kind.items()):
            stats = percentiles(values)
            rows.append(
                [title, kind, len(values), *(stats[k] for k in ("p50", "p90", "p99", "max"))]
            )
            axis.hist(values, bins=min(20, max(3, len(values))), alpha=0.6, label=kind)
        axis.set_title(title)
        axis.set_xlabel("seconds")
        axis.legend(fontsize="small")
        parts.append(_png(figure))
    table = _table(["measure", "fault", "n", "p50", "p90", "p99", "max"], rows)
    return table + "".join(parts)


def _accounting(journal: Mapping[str, Any]) -> str:
    ledger = journal.get("ledger") or {}
    if not ledger:
        return "<p>No ledger (the tree did not run).</p>"
    keys = (
        "sent",
        "handled",
        "undelivered",
        "dead_lettered",
        "dropped_by_fault",
        "resent",
        "duplicates_dropped",
        "rejected",
    )
    rows = [["all", *(ledger["total"].get(k, 0) for k in keys)]]
    for kind, counts in sorted((ledger.get("by_kind") or {}).items()):
        rows.append([kind, *(counts.get(k, 0) for k in keys)])
    balanced = "balances" if ledger.get("balanced") else "does NOT balance"
    note = (
        f"<p>sent = handled + undelivered + dead-lettered + dropped by fault: the ledger "
        f"{balanced}; {ledger.get('unreported', 0)} incarnation(s) killed without reporting.</p>"
    )
    return _table(["message kind", *keys], rows) + note


def _counterexample(verdict: Mapping[str, Any]) -> str:
    example = verdict.get("counterexample")
    if example is None:
        return ""
    return html.escape(json.dumps(example, indent=1, default=str))


def render_html(journal: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    """The whole report as one HTML document (no external references)."""
    status = str(journal.get("status"))
    colour = {"completed": "#1a7f37", "deviated": "#b35900", "aborted": "#c0392b"}.get(
        status, "#333"
    )
    versions = journal.get("versions") or {}
    header = (
        f"<h1>{html.escape(str(journal.get('title')))}</h1>"
        f'<p class="status" style="color:{colour}">{html.escape(status)}</p>'
        + _table(
            ["seed", "base", "started", "fault phase (s)", "elapsed (s)", "versions"],
            [
                [
                    journal.get("seed"),
                    journal.get("base"),
                    journal.get("started_at"),
                    journal.get("duration"),
                    journal.get("elapsed"),
                    ", ".join(f"{k} {v}" for k, v in versions.items()),
                ]
            ],
        )
    )
    if journal.get("abort_reason"):
        header += f"<p><b>Reason:</b> {html.escape(str(journal['abort_reason']))}</p>"
    probes = _table(
        ["probe", "path", "phase", "ok", "detail", "seconds"],
        [
            [
                p["probe"],
                p.get("path"),
                p["phase"],
                "ok" if p["ok"] else "FAILED",
                p["detail"],
                p["seconds"],
            ]
            for p in journal.get("steady_state") or []
        ],
    )
    invariant_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'ok' if v['ok'] else '<b>FAILED</b>'}</td>"
        f"<td>{html.escape(str(v['detail']))}</td><td><pre>{_counterexample(v)}</pre></td></tr>"
        for name, v in (journal.get("invariants") or {}).items()
    )
    invariants = (
        "<table><tr><th>invariant</th><th>result</th><th>detail</th><th>counterexample</th></tr>"
        f"{invariant_rows}</table>"
    )
    injected = [f for f in journal.get("faults") or [] if not f.get("ordinal")]
    hits = [f for f in journal.get("faults") or [] if f.get("ordinal")]
    faults = _table(
        ["id", "kind", "target", "at", "until"],
        [[f["id"], f["kind"], f["target"], f["at"], f.get("until")] for f in injected],
    )
    hit_rows = [
        [f["id"], f["kind"], f["target"], f.get("message_kind"), f["ordinal"], f["at"]]
        for f in hits[:200]
    ]
    hit_table = _table(["fault", "kind", "target", "message kind", "ordinal", "at"], hit_rows)
    if len(hits) > 200:
        hit_table += f"<p>... and {len(hits) - 200} more (journal.json has them all).</p>"
    workload = journal.get("workload") or {}
    body = (
        header
        + "<h2>Steady state</h2>"
        + probes
        + "<h2>Invariants</h2>"
        + invariants
        + "<h2>Accounting</h2>"
        + _accounting(journal)
        + "<h2>Workload</h2>"
        + _table(list(workload), [list(workload.values())])
        + "<h2>Faults injected</h2>"
        + faults
        + "<h3>Messages hit</h3>"
        + hit_table
        + "<h2>Recovery</h2>"
        + _recoveries(journal)
        + "<h2>Timeline</h2>"
        + _timeline(journal, history)
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
        ".status{font-size:1.4em;font-weight:bold}pre{margin:0;font-size:.85em}"
    )
    title = html.escape(str(journal.get("title")))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
