"""Loading ``topology.yaml``: the models it produces, and the precision of its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from actors.cli import main as cli
from protocols.errors import TopologyError
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from protocols.topology_loader import (
    REGENERATE_SCHEMA_COMMAND,
    SCHEMA_PATH,
    load_topology,
    parse_topology,
    render_topology_json_schema,
    topology_json_schema,
)


def yml(text: str) -> str:
    """Dedent a YAML snippet written inline in a test."""
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """Return the 1-based number of the ``occurrence``-th line of ``text`` containing ``needle``."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} times"
    return hits[occurrence - 1]


def topology_error(text: str, *, check_imports: bool = True) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, file="topology.yaml", check_imports=check_imports)
    error = info.value
    assert error.file == "topology.yaml"
    return error


VALID = yml(
    """
    system:
      base: simpleSystemBase
      admin_port: 1900
      log_level: debug
    root:
      id: root
      strategy: one_for_all
      intensity: 3
      period: 10
      children:
        - id: decoder                 # a worker: no `type`
          start: json:JSONDecoder
          args: {strict: false}
          shutdown: brutal_kill
        - id: encoder
          type: worker
          start: json:JSONEncoder
          restart: transient
          shutdown: 2.5
        - id: middle
          type: supervisor
          strategy: rest_for_one
          auto_shutdown: any_significant
          shutdown: infinity
          children:
            - id: inner
              start: json:JSONDecoder
              restart: temporary
              significant: true
              shutdown: 0
            - id: pool
              type: supervisor
              strategy: simple_one_for_one
              template: {id: job, start: json:JSONEncoder, restart: temporary, shutdown: 7}
    """
)


# ---------------------------------------------------------------------------------------------
# Valid files


def test_valid_file_loads_into_the_models(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(VALID, encoding="utf-8")

    topology = load_topology(path)

    assert isinstance(topology, Topology)
    assert topology.system.base == "simpleSystemBase"
    assert topology.system.admin_port == 1900
    assert topology.system.log_level == "debug"
    root = topology.root
    assert (root.id, root.strategy, root.intensity, root.period) == ("root", "one_for_all", 3, 10)
    assert [child.id for child in root.children] == ["decoder", "encoder", "middle"]

    decoder, encoder, middle = root.children
    assert isinstance(decoder, ChildSpec)
    assert decoder.start == "json:JSONDecoder"
    assert decoder.args == {"strict": False}
    assert decoder.shutdown == "brutal_kill"
    assert isinstance(encoder, ChildSpec)
    assert encoder.restart == "transient"
    assert encoder.shutdown == 2.5

    assert isinstance(middle, SupervisorSpec)
    assert middle.strategy == "rest_for_one"
    assert middle.shutdown == "infinity"
    inner, pool = middle.children
    assert isinstance(inner, ChildSpec)
    assert inner.significant is True
    assert inner.shutdown == 0
    assert isinstance(pool, SupervisorSpec)
    assert pool.strategy == "simple_one_for_one"
    assert pool.children == []
    assert pool.template is not None
    assert pool.template.id == "job"
    assert pool.template.type == "worker"
    assert pool.template.shutdown == 7


def test_defaults_apply_when_keys_are_omitted() -> None:
    topology = parse_topology("root: {id: root}\n")

    assert topology.system.base == "multiprocTCPBase"
    assert topology.root.strategy == "one_for_one"
    assert topology.root.children == []
    assert topology.root.shutdown == "infinity"


def test_load_accepts_a_str_path(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(VALID, encoding="utf-8")

    assert load_topology(str(path)) == parse_topology(VALID)


def test_yaml_aliases_and_merge_keys_work() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - &base {id: a, start: json:JSONDecoder, restart: transient}
            - <<: *base
              id: b
        """
    )

    topology = parse_topology(text)

    assert [(c.id, c.restart) for c in topology.root.children] == [
        ("a", "transient"),
        ("b", "transient"),
    ]


def test_check_imports_false_skips_imports() -> None:
    topology = parse_topology(
        "root:\n  id: r\n  children:\n    - {id: a, start: no_such_mod_xyz:Foo}\n",
        check_imports=False,
    )

    child = topology.root.children[0]
    assert isinstance(child, ChildSpec)
    assert child.start == "no_such_mod_xyz:Foo"


# ---------------------------------------------------------------------------------------------
# Unknown keys


def test_unknown_top_level_key() -> None:
    text = yml(
        """
        root:
          id: root
        roots: 1
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "roots:")
    assert error.field == "roots"
    assert "unknown key 'roots'" in error.detail
    assert "did you mean 'root'?" in error.detail


def test_unknown_key_in_system() -> None:
    text = yml(
        """
        system:
          base: simpleSystemBase
          admin_prot: 1900
        root: {id: root}
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "admin_prot")
    assert error.field == "system.admin_prot"
    assert "unknown key 'admin_prot'" in error.detail
    assert "did you mean 'admin_port'?" in error.detail


def test_unknown_key_in_a_child_supervisor() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
            - id: sup
              type: supervisor
              strategyy: one_for_all
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "strategyy")
    assert error.field == "root.children[1].strategyy"
    assert "unknown key 'strategyy'" in error.detail
    assert "did you mean 'strategy'?" in error.detail


def test_unknown_key_in_a_worker_lists_the_valid_keys() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
              zzz: 1
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "zzz")
    assert error.field == "root.children[0].zzz"
    assert "unknown key 'zzz'" in error.detail
    assert ", ".join(sorted(ChildSpec.model_fields)) in error.detail


def test_missing_root() -> None:
    text = "system:\n  base: simpleSystemBase\n"

    error = topology_error(text)

    assert error.field == "root"
    assert error.line == 1
    assert "missing required key 'root'" in error.detail


def test_missing_child_id_points_at_the_child() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - start: json:JSONDecoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "- start:")
    assert error.field == "root.children[0].id"
    assert "missing required key 'id'" in error.detail


# ---------------------------------------------------------------------------------------------
# Bad values


def test_bad_strategy_in_a_nested_supervisor_uses_the_users_path() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
            - id: sup
              type: supervisor
              strategy: one_for_al
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "one_for_al")
    assert error.field == "root.children[1].strategy"
    assert error.detail == (
        "expected one of one_for_one, one_for_all, rest_for_one, simple_one_for_one, "
        "got 'one_for_al'"
    )
    assert str(error) == f"topology.yaml:{error.line}: root.children[1].strategy: {error.detail}"


def test_bad_restart() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
              restart: sometimes
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "sometimes")
    assert error.field == "root.children[0].restart"
    assert "expected one of permanent, transient, temporary, got 'sometimes'" in error.detail


def test_negative_intensity() -> None:
    text = yml(
        """
        root:
          id: root
          intensity: -1
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "intensity")
    assert error.field == "root.intensity"
    assert error.detail == "expected a number >= 0, got -1"


def test_bad_shutdown_names_both_alternatives() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
              shutdown: soon
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "soon")
    assert error.field == "root.children[0].shutdown"
    assert error.detail == ("expected a number or one of brutal_kill, infinity, got 'soon'")


def test_bad_child_type() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              type: manager
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "manager")
    assert error.field == "root.children[0].type"
    assert "worker or supervisor" in error.detail
    assert "got 'manager'" in error.detail


def test_child_that_is_not_a_mapping() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - just-a-string
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "just-a-string")
    assert error.field == "root.children[0]"
    assert error.detail == "expected a mapping, got 'just-a-string'"


def test_further_errors_are_counted() -> None:
    text = yml(
        """
        root:
          id: root
          intensity: -1
          strategy: one_for_al
          restart: sometimes
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "intensity")  # the first in the file
    assert error.field == "root.intensity"
    assert error.detail.endswith("(and 2 more errors)")


# ---------------------------------------------------------------------------------------------
# Supervisor flags and child specs (model validators)


def test_duplicate_child_id_points_at_the_second_id() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
            - id: b
              start: json:JSONDecoder
            - id: a
              start: json:JSONEncoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "- id: a", occurrence=2)
    assert error.field == "root.children[2].id"
    assert error.detail == "duplicate child id 'a'"


def test_duplicate_child_id_in_a_nested_supervisor() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: sup
              type: supervisor
              children:
                - {id: x, start: json:JSONDecoder}
                - {id: x, start: json:JSONDecoder}
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "{id: x", occurrence=2)
    assert error.field == "root.children[0].children[1].id"
    assert "duplicate child id 'x'" in error.detail


def test_simple_one_for_one_with_static_children() -> None:
    text = yml(
        """
        root:
          id: root
          strategy: simple_one_for_one
          template: {id: job, start: json:JSONDecoder}
          children:
            - id: a
              start: json:JSONDecoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "children:")
    assert error.field == "root.children"
    assert "a simple_one_for_one supervisor has no static children" in error.detail


def test_simple_one_for_one_without_template() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: pool
              type: supervisor
              strategy: simple_one_for_one
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "simple_one_for_one")
    assert error.field == "root.children[0].template"
    assert "needs a `template`" in error.detail


def test_template_on_one_for_one() -> None:
    text = yml(
        """
        root:
          id: root
          strategy: one_for_one
          template:
            id: job
            start: json:JSONDecoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "template:")
    assert error.field == "root.template"
    assert "only valid with strategy simple_one_for_one, not one_for_one" in error.detail


def test_significant_permanent_child() -> None:
    text = yml(
        """
        root:
          id: root
          auto_shutdown: any_significant
          children:
            - id: a
              start: json:JSONDecoder
              significant: true
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "significant: true")
    assert error.field == "root.children[0].significant"
    assert "a significant child must be transient or temporary, not permanent" in error.detail


def test_significant_child_with_auto_shutdown_never() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
            - id: b
              start: json:JSONDecoder
              restart: transient
              significant: true
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "significant: true")
    assert error.field == "root.children[1].significant"
    assert "child 'b' is significant but auto_shutdown is `never`" in error.detail


# ---------------------------------------------------------------------------------------------
# `start` and imports


def test_malformed_start_string() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json.JSONDecoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "start:")
    assert error.field == "root.children[0].start"
    assert "'module:Class'" in error.detail
    assert "got 'json.JSONDecoder'" in error.detail


def test_unimportable_start_module() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:JSONDecoder
            - id: b
              start: no_such_mod_xyz.sub:Foo
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "no_such_mod_xyz")
    assert error.field == "root.children[1].start"
    assert error.detail == (
        "cannot import module 'no_such_mod_xyz.sub': No module named 'no_such_mod_xyz'"
    )


def test_missing_class() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: a
              start: json:NoSuchDecoder
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "NoSuchDecoder")
    assert error.field == "root.children[0].start"
    assert error.detail == "module 'json' has no attribute 'NoSuchDecoder'"


def test_start_that_is_not_a_class() -> None:
    text = "root:\n  id: root\n  children:\n    - {id: a, start: 'json:dumps'}\n"

    error = topology_error(text)

    assert error.line == 4
    assert error.field == "root.children[0].start"
    assert error.detail == "json:dumps is not a class (it is a function)"


def test_template_start_is_import_checked_and_errors_are_counted() -> None:
    text = yml(
        """
        root:
          id: root
          children:
            - id: pool
              type: supervisor
              strategy: simple_one_for_one
              template:
                id: job
                start: no_such_mod_xyz:Job
            - id: other
              start: json:Missing
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "no_such_mod_xyz")
    assert error.field == "root.children[0].template.start"
    assert error.detail.startswith("cannot import module 'no_such_mod_xyz'")
    assert error.detail.endswith("(and 1 more error)")


# ---------------------------------------------------------------------------------------------
# Documents and files


def test_yaml_syntax_error() -> None:
    text = yml(
        """
        root:
          id: root
          children: [
            {id: a, start: json:JSONDecoder
        strategy: one_for_one
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "strategy: one_for_one")
    assert error.field == ""
    assert error.detail.startswith("invalid YAML: ")


def test_yaml_syntax_error_bad_indentation() -> None:
    text = "root:\n  id: root\n strategy: one_for_one\n"

    error = topology_error(text)

    assert error.line == 3
    assert error.detail.startswith("invalid YAML: ")


def test_duplicate_yaml_key() -> None:
    text = yml(
        """
        root:
          id: root
          strategy: one_for_one
          strategy: one_for_all
        """
    )

    error = topology_error(text)

    assert error.line == line_of(text, "one_for_all")
    assert error.field == "root.strategy"
    assert error.detail == "duplicate key 'strategy'"


@pytest.mark.parametrize(
    ("text", "got"),
    [("- root\n- system\n", "a list"), ("just a string\n", "'just a string'")],
)
def test_non_mapping_document(text: str, got: str) -> None:
    error = topology_error(text)

    assert error.line == 1
    assert error.field == ""
    assert "expected a mapping with a `root` key" in error.detail
    assert error.detail.endswith(f"got {got}")


def test_empty_document() -> None:
    error = topology_error("# nothing here\n")

    assert error.line is None
    assert "empty" in error.detail


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(TopologyError) as info:
        load_topology(path)

    assert info.value.file == str(path)
    assert info.value.line is None
    assert "not found" in info.value.detail
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(tmp_path)

    assert info.value.file == str(tmp_path)
    assert "cannot read topology file" in info.value.detail


def test_load_reports_the_file_name_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("root:\n  id: root\n  period: 0\n", encoding="utf-8")

    with pytest.raises(TopologyError) as info:
        load_topology(path)

    assert str(info.value) == f"{path}:3: root.period: expected a number > 0, got 0"


# ---------------------------------------------------------------------------------------------
# JSON Schema


def test_checked_in_schema_is_up_to_date() -> None:
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""

    assert current == render_topology_json_schema(), (
        f"{SCHEMA_PATH} is stale; regenerate it with `{REGENERATE_SCHEMA_COMMAND}`"
    )


def test_schema_describes_the_yaml_form() -> None:
    schema = topology_json_schema()

    assert schema["title"] == "Understudy topology"
    assert schema["required"] == ["root"]
    worker = schema["$defs"]["ChildSpec"]
    assert "type" not in worker["required"]
    assert set(worker["required"]) == {"id", "start"}
    items = schema["$defs"]["SupervisorSpec"]["properties"]["children"]["items"]
    assert "discriminator" not in items
    assert {"$ref": "#/$defs/ChildSpec"} in items["oneOf"]
    json.dumps(schema)  # serialisable


def test_schema_topology_command_writes_the_schema(tmp_path: Path) -> None:
    target = tmp_path / "out" / "topology.schema.json"

    result = CliRunner().invoke(cli, ["schema", "topology", "--write", str(target)])

    assert 0 == result.exit_code, result.output
    assert target.read_text(encoding="utf-8") == render_topology_json_schema()
    assert str(target) in result.output


def test_validate_command_checks_a_topology(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(re.sub(r"json:JSON\w+", "actors.demo:Echo", VALID), encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("root:\n  id: root\n  strategy: nope\n", encoding="utf-8")

    ok = CliRunner().invoke(cli, ["validate", str(good)])
    refused = CliRunner().invoke(cli, ["validate", str(bad)])

    assert 0 == ok.exit_code, ok.output
    assert 0 != refused.exit_code
    assert f"{bad}:3: root.strategy:" in refused.output


def test_loader_does_not_import_actors_or_thespian() -> None:
    code = (
        "import sys, protocols.topology_loader\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('actors', 'thespian')]\n"
        "assert not bad, bad\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("system", "says"),
    [
        ({"listen": "0.0.0.0"}, "binds every interface"),  # noqa: S104 - the refused input
        ({"listen": "localhost"}, "must be an IPv4 address"),
        ({"principals": {"system": {}}}, "reserved"),
        ({"principals": {"Bad Name": {}}}, "must match"),
        ({"principals": {"ops": {"roles": ["god"]}}}, "reader"),
        ({"cluster": {"secret": "x"}}, "Extra inputs"),
    ],
)
def test_security_settings_are_checked(system: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        SystemConfig.model_validate(system)


def test_security_defaults_are_loopback_an_operator_and_an_admin() -> None:
    config = SystemConfig()

    assert "127.0.0.1" == config.listen
    assert config.cluster.secret_file is None
    assert {"operator": ["operator"], "admin": ["admin"]} == {
        name: spec.roles for name, spec in config.principals.items()
    }


def test_a_child_declares_the_roles_it_acts_with() -> None:
    assert ["admin"] == ChildSpec(id="o", start="m:C", roles=["admin"]).roles
    with pytest.raises(ValidationError, match="roles"):
        ChildSpec.model_validate({"id": "o", "start": "m:C", "roles": ["root"]})
