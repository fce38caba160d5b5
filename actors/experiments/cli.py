"""``understudy experiment validate FILE`` and ``understudy experiment run FILE``.

Exit codes of ``run``: 0 when every invariant and steady-state probe held, 1 when one did not
(the experiment deviated), 2 when it could not run (a bad file, a tree that did not start); a
bad file is reported on one line naming the file, the line and the field.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actors.experiments.plan import describe
from actors.experiments.runner import ExperimentRunner
from protocols.errors import ExperimentError
from protocols.experiment_loader import LoadedExperiment, load_experiment

__all__ = ["experiment"]

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def _load(file: str) -> LoadedExperiment:
    try:
        return load_experiment(file)
    except ExperimentError as exc:
        _err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)


@click.group()
def experiment() -> None:
    """Fault-injection experiments: validate a file, or run it and write its reports."""


@experiment.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check an experiment file and its topology (exit 2 when invalid)."""
    loaded = _load(file)
    spec = loaded.experiment
    _out.print(
        f"{file}: valid ({len(spec.workload)} workload(s), {len(spec.faults)} fault(s), "
        f"{len(spec.invariants)} invariant(s), {spec.duration:g} s)",
        markup=False,
        highlight=False,
    )


@experiment.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=None, help="override the file's seed")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="report directory")
@click.option("--dry-run", is_flag=True, help="print the planned injections; start nothing")
@click.option(
    "--replay",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="apply exactly the injections a journal.json recorded",
)
def run(file: str, seed: int | None, out: str | None, dry_run: bool, replay: str | None) -> None:
    """Run an experiment: exit 0 if everything held, 1 if it deviated, 2 if it could not run."""
    loaded = _load(file)
    if dry_run:
        runner = ExperimentRunner(loaded, seed=seed, out=out, replay=replay)
        _print_plan(runner)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=1.0)

        def update(line: str, fraction: float) -> None:
            progress.update(task, description=line, completed=fraction)

        try:
            runner = ExperimentRunner(loaded, seed=seed, out=out, replay=replay, progress=update)
            result = runner.run()
        except ValueError as exc:
            _err.print(f"error: {exc}", markup=False, highlight=False)
            sys.exit(2)
    _print_result(result.journal, runner.out)
    sys.exit(result.exit_code)


def _print_plan(runner: ExperimentRunner) -> None:
    try:
        plan = runner.plan()
    except ValueError as exc:
        _err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    spec = runner.experiment
    table = Table(title=f"{spec.title} (seed {spec.seed}): {len(plan)} injection(s)")
    for column in ("at (s)", "until (s)", "fault", "pick", "seed"):
        table.add_column(column)
    for injection in plan:
        step = injection.step
        pick = injection.fixed_target or str(getattr(step, "pick", ""))
        until = "-" if injection.until is None else f"{injection.until:.2f}"
        table.add_row(f"{injection.at:.2f}", until, describe(step), pick, str(injection.seed))
    _out.print(table)


def _print_result(journal: dict[str, object], out: Path) -> None:
    status = str(journal["status"])
    colour = {"completed": "green", "deviated": "yellow", "aborted": "red"}.get(status, "white")
    _out.print(f"[bold {colour}]{status}[/]: {journal['title']} (seed {journal['seed']})")
    if journal.get("abort_reason"):
        _out.print(f"  reason: {journal['abort_reason']}", markup=False, highlight=False)
    invariants = journal.get("invariants")
    if isinstance(invariants, dict):
        for name, verdict in invariants.items():
            mark = "ok" if verdict["ok"] else "FAILED"
            _out.print(f"  {mark:6} {name}: {verdict['detail']}", markup=False, highlight=False)
    probes = journal.get("steady_state")
    if isinstance(probes, list):
        failed = [p for p in probes if not p["ok"]]
        _out.print(f"  steady state: {len(probes) - len(failed)}/{len(probes)} probe(s) held")
        for probe in failed[:5]:
            line = (
                f"  FAILED {probe['probe']} {probe['path']} ({probe['phase']}): {probe['detail']}"
            )
            _out.print(line, markup=False, highlight=False)
    _out.print(f"  reports: {out}", markup=False, highlight=False)
