"""Load ``topology.yaml`` into a :class:`~protocols.topology.Topology`, with precise errors.

Every problem becomes a :class:`~protocols.errors.TopologyError` that names the file, the
1-based line of the offending YAML node, the dotted field path in the user's terms (e.g.
``root.children[1].strategy``) and what was expected::

    topology.yaml:7: root.children[1].strategy: expected one of one_for_one, one_for_all,
    rest_for_one, simple_one_for_one, got 'one_for_al'

In YAML a child mapping with ``type: supervisor`` is a supervisor; without ``type`` (or with
``type: worker``) it is a worker. The loader fills in ``type: worker`` before validation, since
the models' discriminated union needs the tag.

The JSON Schema of the YAML form is :func:`topology_json_schema`; the checked-in copy lives in
``protocols/schemas/topology.schema.json`` and is regenerated with::

    understudy schema topology --write

Pure data: nothing here imports Thespian or ``actors`` (``check_imports`` imports the workers'
modules, but does not check what their classes subclass).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from protocols.errors import TopologyError
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology

__all__ = [
    "REGENERATE_SCHEMA_COMMAND",
    "SCHEMA_PATH",
    "SCHEMA_TITLE",
    "compose_yaml",
    "load_topology",
    "parse_topology",
    "render_topology_json_schema",
    "topology_json_schema",
    "validate_topology_node",
    "validation_problem",
]

SCHEMA_PATH: Final[Path] = Path(__file__).resolve().parent / "schemas" / "topology.schema.json"
SCHEMA_TITLE: Final[str] = "Understudy topology"
REGENERATE_SCHEMA_COMMAND: Final[str] = "understudy schema topology --write"

_JSON_SCHEMA_DIALECT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
_CHILD_TAGS: Final[frozenset[str]] = frozenset({"worker", "supervisor"})
_GOT_MAX_CHARS: Final[int] = 60

PathSegment = str | int
FieldPath = tuple[PathSegment, ...]


# --------------------------------------------------------------------------------------------
# Public API


def load_topology(source: str | os.PathLike[str]) -> Topology:
    """Read, parse and validate a ``topology.yaml`` file.

    Args:
        source: the path of the YAML file.

    Returns:
        The validated topology.

    Raises:
        TopologyError: the file is missing or unreadable, is not valid YAML, does not match the
            schema, or names a worker class that cannot be imported. The error's ``file``,
            ``line`` and ``field`` say where.
    """
    file = os.fspath(source)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError("topology file not found", file=file) from None
    except IsADirectoryError:
        raise TopologyError("cannot read topology file: it is a directory", file=file) from None
    except UnicodeDecodeError as exc:
        msg = f"cannot read topology file: not valid UTF-8 ({exc.reason})"
        raise TopologyError(msg, file=file) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TopologyError(f"cannot read topology file: {reason}", file=file) from None
    return parse_topology(text, file=file)


def parse_topology(text: str, *, file: str | None = None, check_imports: bool = True) -> Topology:
    """Parse and validate the text of a ``topology.yaml``.

    Args:
        text: the YAML document.
        file: the file name to report in errors, or None for ``<topology>``.
        check_imports: import every worker's ``start`` module and check that the named
            attribute exists and is a class.

    Returns:
        The validated topology.

    Raises:
        TopologyError: the text is not valid YAML, does not match the schema, or (with
            ``check_imports``) names a worker class that cannot be imported. Only the first
            problem (in document order) is described; the message counts the others.
    """
    node, data = _compose(text, file)
    if node is None:
        msg = "the topology is empty; expected a mapping with a `root` key"
        raise TopologyError(msg, file=file)
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        msg = (
            "expected a mapping with a `root` key (and optionally `system`) at the top level, "
            f"got {_show(data)}"
        )
        raise TopologyError(msg, file=file, line=_line(node))
    return validate_topology_node(node, data, file=file, check_imports=check_imports)


def validate_topology_node(
    node: yaml.Node, data: Any, *, file: str | None, check_imports: bool = True
) -> Topology:
    """Validate a topology that is part of another YAML document (an experiment's inline
    ``topology``): ``node`` and ``data`` are its node and data; errors name ``file`` and the
    lines of that document, and fields relative to the topology.

    Raises:
        TopologyError: as :func:`parse_topology`.
    """
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        msg = f"expected a mapping with a `root` key, got {_show(data)}"
        raise TopologyError(msg, file=file, line=_line(node))
    if "root" in data:
        data = {**data, "root": _with_child_types(data["root"])}
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, node, data, file) from None
    if check_imports:
        _check_imports(topology, node, file)
    return topology


def compose_yaml(text: str, *, file: str | None) -> tuple[yaml.Node | None, Any]:
    """Parse ``text`` into its node graph (for line numbers) and its data; duplicate keys and
    YAML syntax errors raise TopologyError naming ``file`` and the line."""
    return _compose(text, file)


def validation_problem(
    exc: ValidationError, root: yaml.Node, data: dict[str, Any], file: str | None
) -> TopologyError:
    """The first problem of ``exc`` (validating ``data``, composed from ``root``), located:
    its line and its dotted field path."""
    return _validation_error(exc, root, data, file)


def topology_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the YAML form of a topology.

    Derived from :meth:`Topology.model_json_schema`, adjusted to what YAML files contain: a
    child mapping without ``type`` is a worker, so the children's union has no required
    discriminator and a child supervisor must say ``type: supervisor``.

    Returns:
        A JSON Schema (draft 2020-12) document, titled ``Understudy topology``.
    """
    schema = copy.deepcopy(Topology.model_json_schema())
    defs: dict[str, Any] = schema["$defs"]
    worker_ref = f"#/$defs/{ChildSpec.__name__}"
    supervisor_ref = f"#/$defs/{SupervisorSpec.__name__}"
    defs[ChildSpec.__name__]["required"] = [
        name for name in defs[ChildSpec.__name__].get("required", []) if name != "type"
    ]
    defs[ChildSpec.__name__]["properties"]["type"]["description"] = (
        "`worker`; may be omitted, since a child without `type` is a worker"
    )
    defs[SupervisorSpec.__name__]["properties"]["type"]["description"] = (
        "`supervisor`; required on a child supervisor, optional on `root`"
    )
    children: dict[str, Any] = defs[SupervisorSpec.__name__]["properties"]["children"]
    children["items"] = {
        "description": (
            "a worker (no `type`, or `type: worker`) or a supervisor (`type: supervisor`)"
        ),
        "oneOf": [
            {"$ref": worker_ref},
            {"allOf": [{"$ref": supervisor_ref}], "required": ["type"]},
        ],
    }
    children["default"] = []
    schema["$schema"] = _JSON_SCHEMA_DIALECT
    schema["title"] = SCHEMA_TITLE
    schema["description"] = (
        "The YAML form of an Understudy topology (topology.yaml): the system block and the "
        "root supervisor. Generated from protocols.topology; regenerate with "
        f"`{REGENERATE_SCHEMA_COMMAND}`."
    )
    return schema


def render_topology_json_schema() -> str:
    """Return :func:`topology_json_schema` as the checked-in file's text.

    Returns:
        Pretty JSON with sorted keys and a trailing newline.
    """
    return json.dumps(topology_json_schema(), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------------------------
# YAML


def _compose(text: str, file: str | None) -> tuple[yaml.Node | None, Any]:
    """Parse ``text`` into its node graph (for line numbers) and its Python data."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_duplicate_keys(node, (), set(), file)
        # Constructing from the same node graph keeps the two in step (merge keys included).
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise TopologyError(f"invalid YAML: {_yaml_problem(exc)}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    return node, data


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "syntax error"
    if exc.context and exc.context_mark is not None:
        return f"{problem} ({exc.context} at line {exc.context_mark.line + 1})"
    if exc.context:
        return f"{problem} ({exc.context})"
    return problem


def _check_duplicate_keys(
    node: yaml.Node, path: FieldPath, seen: set[int], file: str | None
) -> None:
    """Reject a mapping that repeats a key (PyYAML would silently keep the last one)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value)
            if isinstance(key_node, yaml.ScalarNode):
                if key in keys:
                    raise TopologyError(
                        f"duplicate key {key!r}",
                        file=file,
                        line=_line(key_node),
                        field=_format_path((*path, key)),
                    )
                keys.add(key)
            _check_duplicate_keys(value_node, (*path, key), seen, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, (*path, index), seen, file)


def _with_child_types(supervisor: Any, active: frozenset[int] = frozenset()) -> Any:
    """Return ``supervisor`` with ``type: worker`` filled in on children and templates.

    Copies rather than mutates, since YAML aliases may share one mapping between places.
    """
    if not isinstance(supervisor, dict) or id(supervisor) in active:
        return supervisor
    active = active | {id(supervisor)}
    result = dict(supervisor)
    children = supervisor.get("children")
    if isinstance(children, list):
        result["children"] = [_with_child_type(child, active) for child in children]
    template = supervisor.get("template")
    if isinstance(template, dict) and "type" not in template:
        result["template"] = {"type": "worker", **template}
    return result


def _with_child_type(child: Any, active: frozenset[int]) -> Any:
    if not isinstance(child, dict):
        return child
    if "type" not in child:
        return {"type": "worker", **child}
    if child["type"] == "supervisor":
        return _with_child_types(child, active)
    return child


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _lookup(mapping: yaml.MappingNode, key: PathSegment) -> tuple[yaml.Node, yaml.Node] | None:
    """Return the (key node, value node) for ``key``; the last one wins, as in construction."""
    found: tuple[yaml.Node, yaml.Node] | None = None
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and str(key_node.value) == str(key):
            found = (key_node, value_node)
    return found


@dataclass(frozen=True)
class _Location:
    """Where a pydantic ``loc`` points in the YAML document."""

    path: FieldPath
    line: int


def _locate(root: yaml.Node, loc: Sequence[PathSegment], *, missing: bool = False) -> _Location:
    """Map a pydantic ``loc`` (or a plain field path) to a user field path and a line.

    Discriminator tags (``worker``/``supervisor`` right after a child's index) and union
    member labels (``constrained-float``, ``literal[...]`` after a scalar) are dropped. A
    ``missing`` key is added to the path and located at its mapping.
    """
    node = root
    key_node: yaml.Node | None = None
    path: list[PathSegment] = []
    expect_tag = False
    for position, segment in enumerate(loc):
        if expect_tag:
            expect_tag = False
            if isinstance(segment, str) and segment in _CHILD_TAGS:
                continue
        if segment == "[key]":
            if key_node is not None:
                node = key_node
            continue
        if isinstance(node, yaml.MappingNode):
            pair = _lookup(node, segment)
            if pair is not None:
                key_node, node = pair
                path.append(segment)
                continue
            if missing and position == len(loc) - 1:
                path.append(segment)  # located at its mapping (or the key that holds it)
            # Otherwise a union member label: nothing in the document to descend into.
            continue
        if isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
            if 0 <= segment < len(node.value):
                expect_tag = bool(path) and path[-1] == "children"
                node = node.value[segment]
                key_node = None
                path.append(segment)
            continue
        # A scalar: the remaining segments are union member labels.
    if isinstance(node, yaml.ScalarNode) or key_node is None or node is key_node:
        line = _line(node)
    else:
        line = _line(key_node)  # a collection under a key: point at the key
    return _Location(tuple(path), line)


def _format_path(path: Sequence[PathSegment]) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out


# --------------------------------------------------------------------------------------------
# Validation errors


@dataclass
class _Problem:
    """One field's error(s), ready to report."""

    location: _Location
    expected: list[str]
    messages: list[str]
    got: Any
    order: int

    def render(self) -> str:
        parts = list(dict.fromkeys(self.messages))
        if self.expected:
            expected = " or ".join(dict.fromkeys(self.expected))
            parts.append(f"expected {expected}, got {_show(self.got)}")
        return "; ".join(parts)


def _validation_error(
    exc: ValidationError, root: yaml.Node, data: dict[str, Any], file: str | None
) -> TopologyError:
    problems: dict[tuple[FieldPath, int], _Problem] = {}
    for order, error in enumerate(exc.errors()):
        location, expected, message = _describe(error, root, data)
        key = (location.path, location.line)
        problem = problems.get(key)
        if problem is None:
            problem = _Problem(location, [], [], error.get("input"), order)
            problems[key] = problem
        if expected is not None:
            problem.expected.append(expected)
        if message is not None:
            problem.messages.append(message)
    ordered = sorted(problems.values(), key=lambda p: (p.location.line, p.order))
    return _first_of([(p.location, p.render()) for p in ordered], file)


def _first_of(problems: Sequence[tuple[_Location, str]], file: str | None) -> TopologyError:
    location, message = problems[0]
    more = len(problems) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return TopologyError(message, file=file, line=location.line, field=_format_path(location.path))


def _describe(
    error: ErrorDetails, root: yaml.Node, data: dict[str, Any]
) -> tuple[_Location, str | None, str | None]:
    """Return where ``error`` is, and either what was expected or a whole message."""
    kind = error["type"]
    loc = error["loc"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        location = _locate(root, loc, missing=True)
        return location, None, f"missing required key {str(location.path[-1])!r}"
    location = _locate(root, loc)
    if kind == "extra_forbidden":
        return location, None, _unknown_key(location.path, data)
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        return _refine_model_error(message, location, root, data), None, message
    tag = str(ctx.get("discriminator", "'type'")).strip("'")
    if kind in ("union_tag_invalid", "union_tag_not_found") and tag != "type":
        tag_location = _locate(root, (*location.path, tag))
        if tag_location.path != (*location.path, tag):
            tag_location = _Location((*location.path, tag), location.line)
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        if kind == "union_tag_not_found" or not tags:
            return tag_location, None, f"missing required key {tag!r}"
        got = _show(_value_at(data, (*location.path, tag)))
        return tag_location, None, f"expected `{tag}` to be one of {tags}, got {got}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_location = _locate(root, (*location.path, "type"))
        if tag_location.path != (*location.path, "type"):
            tag_location = _Location((*location.path, "type"), location.line)
        return (
            tag_location,
            None,
            (
                "expected `type` to be worker or supervisor (or omitted, for a worker), got "
                f"{_show(_value_at(data, (*location.path, 'type')))}"
            ),
        )
    if kind == "recursion_loop":
        return location, None, "a YAML alias refers to a mapping that contains it"
    if kind == "invalid_key":
        return location, None, f"keys must be strings, got {_show(error.get('input'))}"
    expected = _expected(error, location.path)
    if expected is not None:
        return location, expected, None
    return location, None, error["msg"]


def _expected(error: ErrorDetails, path: FieldPath) -> str | None:
    """Say what a type or constraint error expected, e.g. ``a number >= 0``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        raw = str(ctx.get("expected", ""))
        values = re.findall(r"'((?:[^'\\]|\\.)*)'", raw) or [raw]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, name = bounds[kind]
        return f"a number {op} {_number(ctx.get(name))}"
    if kind == "string_pattern_mismatch":
        field = path[-1] if path else ""
        if field == "start":
            return "'module:Class' (a dotted module path, a colon, a class name)"
        if field == "id":
            return "an id made of letters, digits, '_', '.' and '-'"
        return f"a string matching {ctx.get('pattern')}"
    simple = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "finite_number": "a finite number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "list_type": "a list",
        "none_required": "null",
    }
    return simple.get(kind)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(value: Any) -> str:
    """Describe a YAML value the way the user wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    if len(text) > _GOT_MAX_CHARS:
        text = text[: _GOT_MAX_CHARS - 3] + "..."
    return text


def _value_at(data: Any, path: FieldPath) -> Any:
    for segment in path:
        if isinstance(data, dict):
            data = data.get(segment)
        elif isinstance(data, list) and isinstance(segment, int) and 0 <= segment < len(data):
            data = data[segment]
        else:
            return None
    return data


class _Children:
    """Marker for "the children list of a supervisor" while walking a path."""


def _model_at(data: Any, path: FieldPath) -> type[BaseModel] | None:
    """Return the model a mapping at ``path`` is validated against, if any."""
    model: type[BaseModel | _Children] | None = Topology
    current = data
    for segment in path:
        current = _value_at(current, (segment,))
        if model is Topology:
            sections: dict[str, type[BaseModel]] = {"system": SystemConfig, "root": SupervisorSpec}
            model = sections.get(str(segment))
        elif model is SupervisorSpec and segment == "children":
            model = _Children
        elif model is SupervisorSpec and segment == "template":
            model = ChildSpec
        elif model is _Children and isinstance(segment, int):
            is_supervisor = isinstance(current, dict) and current.get("type") == "supervisor"
            model = SupervisorSpec if is_supervisor else ChildSpec
        else:
            return None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


def _unknown_key(path: FieldPath, data: dict[str, Any]) -> str:
    key = str(path[-1]) if path else ""
    message = f"unknown key {key!r}"
    model = _model_at(data, path[:-1])
    if model is None:
        return message
    valid = sorted(model.model_fields)
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; valid keys are {', '.join(valid)}"


def _refine_model_error(
    message: str, location: _Location, root: yaml.Node, data: dict[str, Any]
) -> _Location:
    """Point a model-level error (a model validator's) at the field it is about."""
    path = location.path
    value = _value_at(data, path)
    if not isinstance(value, dict):
        return location

    def at(*rest: PathSegment) -> _Location | None:
        found = _locate(root, (*path, *rest))
        return found if found.path == (*path, *rest) else None

    target: _Location | None = None
    children = value.get("children")
    child_list: list[Any] = children if isinstance(children, list) else []
    if message.startswith("duplicate child id"):
        seen: set[Any] = set()
        for index, child in enumerate(child_list):
            child_id = child.get("id") if isinstance(child, dict) else None
            if child_id in seen:
                target = at("children", index, "id")
                break
            seen.add(child_id)
    elif "has no static children" in message:
        target = at("children")
    elif "needs a `template`" in message:
        target = at("strategy")
        if target is not None:
            target = _Location((*path, "template"), target.line)
    elif message.startswith("auto_shutdown must be"):
        target = at("auto_shutdown")
    elif message.startswith("`template` is only valid"):
        target = at("template")
    elif "is significant but auto_shutdown" in message:
        for index, child in enumerate(child_list):
            if isinstance(child, dict) and child.get("significant"):
                target = at("children", index, "significant")
                break
    elif message.startswith("a significant child"):
        target = at("significant")
    return target or location


# --------------------------------------------------------------------------------------------
# Imports


def _iter_workers(
    supervisor: SupervisorSpec, path: FieldPath
) -> Iterator[tuple[FieldPath, ChildSpec]]:
    for index, child in enumerate(supervisor.children):
        if isinstance(child, SupervisorSpec):
            yield from _iter_workers(child, (*path, "children", index))
        else:
            yield (*path, "children", index), child
    if supervisor.template is not None:
        yield (*path, "template"), supervisor.template


def _import_problem(start: str, modules: dict[str, object | str]) -> str | None:
    """Say why ``module:Class`` cannot be imported, or return None if it can."""
    module_name, _, attribute = start.partition(":")
    module = modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            module = f"cannot import module {module_name!r}: {exc}"
        except Exception as exc:  # noqa: BLE001 - any failure while importing user code
            module = f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        modules[module_name] = module
    if isinstance(module, str):
        return module
    try:
        target = getattr(module, attribute)
    except AttributeError:
        return f"module {module_name!r} has no attribute {attribute!r}"
    if not isinstance(target, type):
        return f"{start} is not a class (it is a {type(target).__name__})"
    return None


def _check_imports(topology: Topology, root: yaml.Node, file: str | None) -> None:
    modules: dict[str, object | str] = {}
    problems: list[tuple[_Location, str]] = []
    for path, spec in _iter_workers(topology.root, ("root",)):
        problem = _import_problem(spec.start, modules)
        if problem is not None:
            problems.append((_locate(root, (*path, "start")), problem))
    if problems:
        problems.sort(key=lambda item: item[0].line)
        raise _first_of(problems, file)


# --------------------------------------------------------------------------------------------
# Command line
