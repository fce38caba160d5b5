"""Load an experiment file, with errors that name the file, the line and the field.

Every problem becomes an :class:`~protocols.errors.ExperimentError`; its text is one line::

    kill.yaml:9: faults[0].schedule.every: expected a number > 0, got -3

Beyond the schema the loader checks what it can before anything starts: the topology (a file
relative to the experiment, or inline), each workload and probe message (its kind is
registered once the topology's workers are imported, and its body validates), and each
``module:function`` it names (importable, callable).

The JSON Schema is :func:`experiment_json_schema`; the checked-in copy is
``protocols/schemas/experiment.schema.json`` (``understudy schema experiment --write``).
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from protocols._base import Message, message_class
from protocols.errors import ExperimentError, TopologyError
from protocols.experiment import (
    AnswersProbe,
    Experiment,
    HostFaultStep,
    MessagesWorkload,
    MessageTemplate,
    PythonProbe,
    PythonWorkload,
    UserInvariant,
)
from protocols.topology import Topology
from protocols.topology_loader import (
    compose_yaml,
    load_topology,
    validate_topology_node,
    validation_problem,
)

__all__ = [
    "EXPERIMENT_SCHEMA_PATH",
    "LoadedExperiment",
    "build_message",
    "experiment_json_schema",
    "load_experiment",
    "parse_experiment",
    "render_experiment_json_schema",
    "resolve_call",
]

EXPERIMENT_SCHEMA_PATH: Final[Path] = (
    Path(__file__).resolve().parent / "schemas" / "experiment.schema.json"
)


@dataclass(frozen=True)
class LoadedExperiment:
    """A validated experiment, its topology, and where they came from."""

    experiment: Experiment
    topology: Topology
    file: str
    topology_file: str | None
    """The topology's file, or None when it is inline."""


def load_experiment(source: str | os.PathLike[str]) -> LoadedExperiment:
    """Read and check an experiment file (see the module doc).

    Raises:
        ExperimentError: the file, its topology or something it names is not valid.
    """
    file = os.fspath(source)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError("experiment file not found", file=file) from None
    except IsADirectoryError:
        raise ExperimentError("cannot read experiment file: it is a directory", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"cannot read experiment file: {exc}", file=file) from None
    return parse_experiment(text, file=file)


def parse_experiment(text: str, *, file: str) -> LoadedExperiment:
    """Parse and check the text of an experiment file named ``file`` (relative topology paths
    are resolved against its folder)."""
    try:
        node, data = compose_yaml(text, file=file)
    except TopologyError as exc:
        raise _as_experiment_error(exc) from None
    if node is None or not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        msg = "expected a mapping with `title`, `topology`, `duration` and the other keys"
        raise ExperimentError(msg, file=file, line=1 if node is None else node.start_mark.line + 1)
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as exc:
        raise _as_experiment_error(validation_problem(exc, node, data, file)) from None
    topology, topology_file = _topology(experiment, node, file)
    _check_references(experiment, node, file)
    return LoadedExperiment(experiment, topology, file, topology_file)


def _topology(experiment: Experiment, node: yaml.MappingNode, file: str) -> tuple[Topology, Any]:
    where = _key_line(node, ("topology",))
    if isinstance(experiment.topology, str):
        path = Path(file).resolve().parent / experiment.topology
        try:
            return load_topology(path), str(path)
        except TopologyError as exc:
            msg = f"its topology {experiment.topology!r} is invalid: {exc}"
            raise ExperimentError(msg, file=file, line=where, field="topology") from None
    sub = _node_at(node, ("topology",))
    assert sub is not None  # noqa: S101 - validated: the key is there
    try:
        return validate_topology_node(sub, experiment.topology, file=file), None
    except TopologyError as exc:
        field = f"topology.{exc.field}" if exc.field else "topology"
        raise ExperimentError(exc.detail, file=file, line=exc.line, field=field) from None


def _check_references(experiment: Experiment, node: yaml.MappingNode, file: str) -> None:
    for index, workload in enumerate(experiment.workload):
        where = ("workload", index)
        if isinstance(workload, MessagesWorkload):
            _check_message(workload.message, node, file, (*where, "message"))
        if isinstance(workload, PythonWorkload):
            _check_call(workload.call, node, file, (*where, "call"))
    for index, probe in enumerate(experiment.steady_state):
        where = ("steady_state", index)
        if isinstance(probe, AnswersProbe) and probe.message is not None:
            _check_message(probe.message, node, file, (*where, "message"))
        if isinstance(probe, PythonProbe):
            _check_call(probe.call, node, file, (*where, "call"))
    names = [h.name for h in experiment.hosts]
    for index, step in enumerate(experiment.faults):
        if isinstance(step, HostFaultStep) and not fnmatch.filter(names, step.target):
            path = ("faults", index, "target")
            msg = f"{step.target!r} matches none of the experiment's hosts ({', '.join(names)})"
            raise ExperimentError(msg, file=file, line=_key_line(node, path), field=_dotted(path))
    for index, invariant in enumerate(experiment.invariants):
        if isinstance(invariant, UserInvariant):
            _check_call(invariant.call, node, file, ("invariants", index, "call"))


def build_message(template: MessageTemplate) -> Message:
    """The message a template describes.

    Raises:
        ValueError: the kind is not registered, or the body does not validate.
    """
    cls = message_class(template.kind)
    if cls is None:
        msg = f"unknown message kind {template.kind!r} (not defined by the topology's workers)"
        raise ValueError(msg)
    try:
        return cls.model_validate({**template.body, "kind": template.kind})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = f"body of {template.kind!r} is invalid: {where}: {first['msg']}"
        raise ValueError(msg) from None


def resolve_call(call: str) -> Any:
    """The callable ``module:function`` names.

    Raises:
        ValueError: the module cannot be imported, or has no such callable.
    """
    module_name, _, attr = call.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        msg = f"cannot import {module_name!r}: {exc}"
        raise ValueError(msg) from None
    target = getattr(module, attr, None)
    if not callable(target):
        msg = f"{module_name!r} has no callable {attr!r}"
        raise ValueError(msg)
    return target


def _check_message(
    template: MessageTemplate, node: yaml.MappingNode, file: str, path: tuple[str | int, ...]
) -> None:
    _checked(build_message, template, node, file, path)


def _check_call(call: str, node: yaml.MappingNode, file: str, path: tuple[str | int, ...]) -> None:
    _checked(resolve_call, call, node, file, path)


def _checked(
    check: Callable[[Any], object],
    value: Any,
    node: yaml.MappingNode,
    file: str,
    path: tuple[str | int, ...],
) -> None:
    """Run ``check`` on ``value``; its ValueError becomes an error at ``path`` of the file."""
    try:
        check(value)
    except ValueError as exc:
        raise ExperimentError(
            str(exc), file=file, line=_key_line(node, path), field=_dotted(path)
        ) from None


def _node_at(node: yaml.Node, path: Sequence[str | int]) -> yaml.Node | None:
    current: yaml.Node | None = node
    for segment in path:
        if isinstance(current, yaml.MappingNode):
            current = next((v for k, v in current.value if k.value == segment), None)
        elif isinstance(current, yaml.SequenceNode) and isinstance(segment, int):
            current = current.value[segment] if segment < len(current.value) else None
        else:
            return None
    return current


def _key_line(node: yaml.Node, path: Sequence[str | int]) -> int:
    found = _node_at(node, path)
    return (found or node).start_mark.line + 1


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for segment in path:
        text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return text.lstrip(".")


def _as_experiment_error(exc: TopologyError) -> ExperimentError:
    return ExperimentError(exc.detail, file=exc.file, line=exc.line, field=exc.field)


def experiment_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an experiment file."""
    schema = Experiment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Understudy experiment"
    schema["description"] = (
        "A fault-injection experiment (see protocols.experiment). Generated; regenerate with "
        "`understudy schema experiment --write`."
    )
    return schema


def render_experiment_json_schema() -> str:
    """:func:`experiment_json_schema` as the checked-in file's text."""
    return json.dumps(experiment_json_schema(), indent=2, sort_keys=True) + "\n"
