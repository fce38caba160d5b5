"""Properties of path decisions and the pattern grammar, against a real directory."""

from __future__ import annotations

import fnmatch
import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.services.access_policy import (
    AccessPolicy,
    InvalidPattern,
    InvalidResource,
    check_tool_pattern,
    parse_path_pattern,
)

names = st.text(alphabet="abc.-_", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
steps = st.one_of(names, st.sampled_from(["..", ".", ""]))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real, symlink-free directory ``<tmp>/outer/ws`` (resolved), two levels deep."""
    base = Path(os.path.realpath(tmp_path_factory.mktemp("access")))
    ws = base / "outer" / "ws"
    (ws / "a").mkdir(parents=True)
    return str(ws)


@settings(max_examples=300)
@given(relative=st.lists(steps, max_size=8))
def test_a_path_is_granted_exactly_when_it_normalises_into_the_workspace(
    workspace: str, relative: list[str]
) -> None:
    """So any ``..`` that escapes the workspace is denied, and one that stays in it is not."""
    policy = AccessPolicy()
    policy.grant_role("coder", "reader")
    policy.set_permissions("coder", paths=[workspace + "/**"])
    path = workspace + "/" + "/".join(relative)
    lexical = posixpath.normpath(path)  # the tree has no symlinks: resolution is lexical

    decision = policy.check("coder", "read", path)

    inside = lexical == workspace or lexical.startswith(workspace + "/")
    assert inside == decision.allowed, (path, decision)
    assert lexical == decision.resolved


@given(prefix=st.lists(names, min_size=1, max_size=3), below=st.lists(names, max_size=4))
def test_a_globstar_matches_its_directory_and_everything_below(
    prefix: list[str], below: list[str]
) -> None:
    root = "/" + "/".join(prefix)
    pattern = parse_path_pattern(root + "/**")

    assert pattern.matches("/".join([root, *below]))
    assert not pattern.matches(root + "x")
    assert not pattern.matches(posixpath.dirname(root))


@given(
    parent=st.lists(names, max_size=3), name=names, deeper=st.lists(names, min_size=1, max_size=3)
)
def test_a_star_never_crosses_a_slash(parent: list[str], name: str, deeper: list[str]) -> None:
    base = "/" + "/".join(parent) if parent else ""
    pattern = parse_path_pattern(base + "/*")

    assert pattern.matches(f"{base}/{name}")
    assert not pattern.matches("/".join([f"{base}/{name}", *deeper]))


@given(
    pattern=st.text(alphabet="ab*?[]!-", min_size=1, max_size=6),
    name=st.text(alphabet="ab*?[]!-", min_size=1, max_size=6),
)
def test_within_one_component_a_pattern_matches_as_fnmatch_does(pattern: str, name: str) -> None:
    try:
        parsed = parse_path_pattern("/d/" + pattern)
    except InvalidPattern:
        return  # an unclosed '[' or a reversed range; fnmatch would read them as literals
    if "**" in pattern:
        return

    assert fnmatch.fnmatchcase(name, pattern) == parsed.matches("/d/" + name)


@given(text=st.text(max_size=12))
def test_parsing_any_text_either_succeeds_or_raises_invalid_pattern(text: str) -> None:
    try:
        parsed = parse_path_pattern(text)
    except InvalidPattern:
        return
    assert parsed.text.startswith("/")
    assert parse_path_pattern(parsed.text) == parsed, "normalising is idempotent"


@given(text=st.text(max_size=12))
def test_any_tool_text_either_is_a_tool_pattern_or_raises_invalid_pattern(text: str) -> None:
    try:
        checked = check_tool_pattern(text)
    except InvalidPattern:
        return
    assert text == checked


@given(resource=st.text(max_size=20), action=st.sampled_from(["read", "write", "execute"]))
def test_checking_any_resource_decides_or_raises_invalid_resource(
    workspace: str, resource: str, action: str
) -> None:
    policy = AccessPolicy()
    policy.grant_role("coder", "operator")
    policy.set_permissions("coder", paths=[workspace + "/**"], tools=["*"])
    try:
        decision = policy.check("coder", action, resource)
    except InvalidResource:
        return
    inside = decision.resolved == workspace or decision.resolved.startswith(workspace + "/")
    assert decision.allowed == (action == "execute" or inside)
