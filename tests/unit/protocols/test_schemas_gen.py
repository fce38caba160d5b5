"""The checked-in JSON Schemas of the protocol modules (protocols/schemas/<module>.schema.json)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.cli import main as cli
from protocols._base import Message, registered_kinds
from protocols.schemas_gen import (
    PROTOCOL_MODULES,
    REGENERATE_COMMAND,
    message_classes,
    protocol_schema,
    render,
    schema_path,
)
from tests.strategies import messages_of

ALL_CLASSES: list[tuple[str, type[Message]]] = [
    (module_name, cls)
    for module_name in PROTOCOL_MODULES
    for cls in message_classes(module_name).values()
]


@pytest.mark.parametrize("module_name", PROTOCOL_MODULES)
def test_checked_in_schema_is_up_to_date(module_name: str) -> None:
    path = schema_path(module_name)
    current = path.read_text(encoding="utf-8") if path.exists() else ""

    assert current == render(module_name), (
        f"{path} is stale; regenerate it with `{REGENERATE_COMMAND}`"
    )


@pytest.mark.parametrize("module_name", PROTOCOL_MODULES)
def test_schema_holds_every_public_kind_of_its_module(module_name: str) -> None:
    schema = protocol_schema(module_name)  # imports the module, so its kinds are registered
    public = {
        kind: cls
        for kind, cls in registered_kinds().items()
        if cls.__module__ == module_name and not cls.__name__.startswith("_")
    }

    assert public, f"{module_name} registers no public kind"
    assert schema["title"] == f"Understudy {module_name.rsplit('.', 1)[-1]} protocol"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert schema["discriminator"]["mapping"] == {
        kind: f"#/$defs/{cls.__name__}" for kind, cls in public.items()
    }
    assert sorted(ref["$ref"] for ref in schema["oneOf"]) == sorted(
        f"#/$defs/{cls.__name__}" for cls in public.values()
    )
    for kind, cls in public.items():
        definition = schema["$defs"][cls.__name__]
        assert definition["properties"]["kind"]["const"] == kind
        assert definition["required"][0] == "kind"


@pytest.mark.parametrize("module_name", PROTOCOL_MODULES)
def test_private_and_imported_messages_are_not_alternatives(module_name: str) -> None:
    schema = protocol_schema(module_name)
    alternatives = {ref["$ref"].removeprefix("#/$defs/") for ref in schema["oneOf"]}
    kinds = registered_kinds()

    for name in alternatives:
        assert not name.startswith("_")
    for kind in schema["discriminator"]["mapping"]:
        assert kinds[kind].__module__ == module_name


def test_render_is_deterministic_sorted_json() -> None:
    text = render("protocols.scheduler")

    assert text == render("protocols.scheduler")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_schema_protocols_command_writes_every_schema(tmp_path: Path) -> None:
    target = tmp_path / "out"

    result = CliRunner().invoke(cli, ["schema", "protocols", "--write", str(target)])

    assert 0 == result.exit_code, result.output
    out = result.output
    for module_name in PROTOCOL_MODULES:
        written = target / schema_path(module_name).name
        assert written.read_text(encoding="utf-8") == render(module_name)
        assert str(written) in out


def test_schema_protocols_command_prints_one_schema() -> None:
    result = CliRunner().invoke(cli, ["schema", "protocols", "agent"])

    assert 0 == result.exit_code, result.output
    assert result.output == render("protocols.agent")


# --- Samples validate against the schema (needs the jsonschema package) ----------------------


@functools.cache
def _validator(module_name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = protocol_schema(module_name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("module_name", PROTOCOL_MODULES)
def test_schema_is_valid_json_schema(module_name: str) -> None:
    _validator(module_name)


@pytest.mark.parametrize(
    ("module_name", "cls"), ALL_CLASSES, ids=[f"{m}.{c.__name__}" for m, c in ALL_CLASSES]
)
@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sample_messages_validate_against_their_schema(
    module_name: str, cls: type[Message], data: st.DataObject
) -> None:
    validator = _validator(module_name)
    message = data.draw(messages_of(cls))
    document = message.model_dump(mode="json")

    errors = [error.message for error in validator.iter_errors(document)]
    assert errors == [], f"{cls.__name__} sample {document!r} does not match its schema"
    without_kind = {key: value for key, value in document.items() if key != "kind"}
    assert not validator.is_valid(without_kind), "a message without `kind` must not validate"
