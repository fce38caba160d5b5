"""The tree's shape is a contract: layers import only downwards, each public name has one home.

Modules are found with ``pkgutil`` (never listed by hand), so a new module cannot escape.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import actors
import protocols

ROOT = Path(__file__).resolve().parents[2]

# Which top-level parts of the project a layer may import (besides the standard library and
# third-party packages). ``actors.errors`` and ``actors.logs`` are the foundation of every layer.
ALLOWED: dict[str, set[str]] = {
    "protocols": {"protocols"},
    "actors.core": {"protocols", "actors.core", "actors.errors", "actors.logs"},
    "actors.services": {
        "protocols",
        "actors.core",
        "actors.errors",
        "actors.logs",
        "actors.services",
    },
    "actors.agents": {"protocols", "actors.core", "actors.agents", "actors.errors", "actors.logs"},
    "actors.model": {"protocols", "actors.model", "actors.logs"},
    "actors.cluster": {
        "protocols",
        "actors.core",
        "actors.cluster",
        "actors.errors",
        "actors.logs",
    },
    "actors.experiments": {
        "protocols",
        "actors.core",
        "actors.model",
        "actors.experiments",
        "actors.errors",
        "actors.logs",
    },
}
TOP_LEVEL = {"actors", "actors.errors", "actors.cli", "actors.logs", "actors.demo"}
THESPIAN_ADAPTERS = {"actors.core.seam", "actors.core.workarounds", "actors.core.transport_guard"}


def _modules() -> list[str]:
    names = ["actors", "protocols"]
    for package in (actors, protocols):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _source(module_name: str) -> ast.Module:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    return ast.parse(Path(module.__file__).read_text(encoding="utf-8"))


def _imports(module_name: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(_source(module_name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _layer(module_name: str) -> str | None:
    if module_name.split(".")[0] == "protocols":
        return "protocols"
    for layer in ALLOWED:
        if module_name == layer or module_name.startswith(f"{layer}."):
            return layer
    return None


def _part(imported: str) -> str | None:
    """The project part an import names: a layer, or a top-level module of ``actors``."""
    if imported.split(".")[0] == "protocols":
        return "protocols"
    if imported.split(".")[0] != "actors":
        return None
    for layer in ALLOWED:
        if imported == layer or imported.startswith(f"{layer}."):
            return layer
    return ".".join(imported.split(".")[:2])


def test_the_modules_are_found() -> None:
    assert {
        "actors.core.seam",
        "actors.services.scheduler",
        "actors.agents.agent",
        "actors.model.server",
        "protocols.codec",
    } <= set(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_each_module_lives_in_a_layer_or_is_a_top_level_module(module_name: str) -> None:
    assert module_name in TOP_LEVEL or _layer(module_name) is not None


@pytest.mark.parametrize("module_name", [m for m in MODULES if _layer(m) is not None])
def test_each_layer_imports_only_what_its_docstring_allows(module_name: str) -> None:
    layer = _layer(module_name)
    assert layer is not None
    parts = {_part(name) for name in _imports(module_name)} - {None}

    assert set() == parts - ALLOWED[layer], f"{module_name} imports {parts - ALLOWED[layer]}"


def _role(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1].split("_")[0]


@pytest.mark.parametrize("module_name", [m for m in MODULES if _layer(m) == "actors.services"])
def test_services_never_import_each_other(module_name: str) -> None:
    """A service imports only its own role's parts (``<role>_<part>``) and role-less plumbing."""
    siblings = {name for name in _imports(module_name) if name.startswith("actors.services.")}
    foreign = {
        name
        for name in siblings
        if not name.rsplit(".", 1)[-1].startswith("_") and _role(name) != _role(module_name)
    }

    assert set() == foreign


@pytest.mark.parametrize("module_name", MODULES)
def test_thespian_is_imported_only_by_the_seam_and_the_workarounds(module_name: str) -> None:
    thespian = {name for name in _imports(module_name) if name.split(".")[0] == "thespian"}

    if module_name not in THESPIAN_ADAPTERS:
        assert set() == thespian


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_declares_all(module_name: str) -> None:
    module = importlib.import_module(module_name)

    assert isinstance(getattr(module, "__all__", None), list | tuple), module_name
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


@pytest.mark.parametrize(
    "package",
    ["actors.core", "actors.services", "actors.agents", "actors.model", "actors.experiments"],
)
def test_each_layer_says_what_it_may_import(package: str) -> None:
    doc = importlib.import_module(package).__doc__ or ""

    assert "May import" in doc


def _defined_here(module_name: str) -> set[str]:
    names: set[str] = set()
    for node in _source(module_name).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


FACADES = {"actors", "protocols"}


def test_each_public_name_has_exactly_one_home() -> None:
    """A module exports only what it defines; only the two package facades re-export."""
    homes: dict[str, list[str]] = {}
    for module_name in MODULES:
        if module_name in FACADES:
            continue
        module = importlib.import_module(module_name)
        defined = _defined_here(module_name)
        for name in module.__all__:
            assert name in defined, f"{module_name} exports {name!r} but defines it elsewhere"
            homes.setdefault(name, []).append(module_name)

    shared = {name: where for name, where in homes.items() if len(where) > 1}
    assert {} == shared


@pytest.mark.parametrize("facade", sorted(FACADES))
def test_the_facades_re_export_names_from_their_one_home(facade: str) -> None:
    module = importlib.import_module(facade)
    for name in module.__all__:
        obj = getattr(module, name)
        home = importlib.import_module(obj.__module__)

        assert name in home.__all__, f"{facade}.{name} is not exported by {obj.__module__}"
