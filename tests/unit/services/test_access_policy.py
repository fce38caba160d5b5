"""The access policy without an actor: roles, scopes, glob matching and path normalisation.

Path cases run against real directories and symlinks in a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.services.access_policy import (
    ACTIONS,
    ROLES,
    AccessPolicy,
    InvalidPattern,
    InvalidResource,
    InvalidSubject,
    PermissionDenied,
    UnknownAction,
    UnknownRole,
    UnknownSubject,
    check_tool_pattern,
    normalise_path,
    parse_path_pattern,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A real tree: work/ (the workspace, with src/a.py and .git/config), secret/, outside."""
    real = Path(os.path.realpath(tmp_path))
    (real / "work" / "src").mkdir(parents=True)
    (real / "work" / "src" / "a.py").write_text("print()")
    (real / "work" / ".git").mkdir()
    (real / "work" / ".git" / "config").write_text("")
    (real / "secret").mkdir()
    (real / "secret" / "key").write_text("k")
    return real


def agent_policy(
    *paths: str, tools: tuple[str, ...] = ("fs.*",), network: bool = False, role: str = "operator"
) -> AccessPolicy:
    policy = AccessPolicy()
    policy.grant_role("coder", role)
    policy.set_permissions("coder", tools=list(tools), paths=list(paths), network=network)
    return policy


# --- Roles ----------------------------------------------------------------------------------


def test_roles_grant_growing_sets_of_actions() -> None:
    assert {"read", "list"} == ROLES["reader"]
    assert ROLES["reader"] < ROLES["operator"] < ROLES["admin"] <= ROLES["superuser"]
    assert set(ACTIONS) == ROLES["superuser"]
    assert {"write", "execute", "network", "task.submit"} == ROLES["operator"] - ROLES["reader"]
    assert "admin.grant" not in ROLES["operator"]
    assert "admin.grant" in ROLES["admin"]


def test_an_unknown_subject_is_denied_by_default(root: Path) -> None:
    decision = AccessPolicy().check("nobody", "read", str(root / "work"))

    assert not decision.allowed
    assert "unknown subject 'nobody'" in decision.reason


def test_a_subject_without_a_role_for_the_action_is_denied(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**", role="reader")

    write = policy.check("coder", "write", str(root / "work" / "src" / "a.py"))
    read = policy.check("coder", "read", str(root / "work" / "src" / "a.py"))

    assert not write.allowed
    assert "no role of 'coder' grants 'write' (roles: reader)" == write.reason
    assert read.allowed


def test_actions_without_a_scope_need_only_the_role() -> None:
    policy = agent_policy()

    assert policy.check("coder", "task.submit", "t-1").allowed
    assert not policy.check("coder", "agent.spawn", "x").allowed
    assert "role 'operator' grants 'task.submit'" == policy.check("coder", "task.submit", "").reason


def test_a_superuser_is_granted_everything_without_scopes(root: Path) -> None:
    policy = AccessPolicy()
    policy.grant_role("root-user", "superuser")

    assert policy.check("system", "write", "/etc/passwd").allowed
    assert policy.check("root-user", "network", "example.org").allowed
    assert policy.check("root-user", "execute", "anything").allowed
    assert policy.check("root-user", "read", str(root / "secret" / "key")).allowed


def test_an_admin_holds_every_action_but_stays_within_its_scopes(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**", role="admin")

    assert policy.check("coder", "write", f"{root}/work/src/a.py").allowed
    assert not policy.check("coder", "read", f"{root}/secret/key").allowed
    assert not policy.check("coder", "network", "example.org").allowed


def test_revoking_a_role_removes_its_actions() -> None:
    policy = agent_policy()

    changed = policy.revoke_role("coder", "operator")
    again = policy.revoke_role("coder", "operator")

    assert changed
    assert not again
    assert set() == policy.get("coder").roles
    assert not policy.check("coder", "task.submit", "t").allowed


def test_bad_input_raises_typed_errors() -> None:
    policy = AccessPolicy()

    with pytest.raises(UnknownRole, match="'wizard'"):
        policy.grant_role("coder", "wizard")
    with pytest.raises(UnknownSubject, match="'ghost'"):
        policy.get("ghost")
    with pytest.raises(UnknownSubject):
        policy.revoke_role("ghost", "reader")
    with pytest.raises(UnknownAction, match="'teleport'"):
        policy.check("system", "teleport", "")
    with pytest.raises(InvalidSubject):
        policy.grant_role("two words", "reader")
    with pytest.raises(InvalidSubject):
        policy.grant_role("", "reader")
    with pytest.raises(InvalidResource):
        policy.check("system", "read", "relative/path")
    with pytest.raises(InvalidResource):
        policy.check("system", "read", "/nul\x00byte")
    with pytest.raises(InvalidResource):
        policy.check("system", "execute", "")
    assert ["system"] == list(policy.subjects), "a failed change must not create a subject"


def test_the_system_subject_cannot_be_changed() -> None:
    policy = AccessPolicy()

    with pytest.raises(PermissionDenied, match="built in"):
        policy.revoke_role("system", "superuser")
    with pytest.raises(PermissionDenied):
        policy.set_permissions("system", network=False)


def test_authorize_checks_the_admin_actions_and_who_grants_superuser() -> None:
    policy = AccessPolicy()
    policy.grant_role("alice", "admin")
    policy.grant_role("bob", "operator")

    policy.authorize("alice", "admin.grant", role="operator")
    policy.authorize("system", "admin.grant", role="superuser")
    with pytest.raises(PermissionDenied, match="only a superuser"):
        policy.authorize("alice", "admin.grant", role="superuser")
    with pytest.raises(PermissionDenied, match=r"'bob' lacks 'admin\.grant'"):
        policy.authorize("bob", "admin.grant", role="reader")
    with pytest.raises(PermissionDenied, match="unknown subject 'eve'"):
        policy.authorize("eve", "admin.permissions")


# --- ensure_permissions ------------------------------------------------------------------------


def test_ensure_permissions_grants_tools_programs_workspace_network_and_role(root: Path) -> None:
    policy = AccessPolicy()

    changed = policy.ensure_permissions(
        "coder",
        tools=["fs.read", "web.*"],
        programs=["python3"],
        workspace=f"{root}/work/**",
        network=True,
        role="operator",
    )

    held = policy.get("coder")
    assert changed
    assert {"operator"} == held.roles
    assert ["fs.read", "web.*"] == held.tools
    assert ["python3"] == held.programs
    assert [f"{root}/work/**"] == held.paths  # no /tmp: the agent's temp dir is in its workspace
    assert not policy.check("coder", "write", "/tmp/shared-by-every-run.txt").allowed
    assert held.network
    assert policy.check("coder", "write", f"{root}/work/src/new.py").allowed
    assert policy.check("coder", "execute", "web.fetch").allowed
    assert policy.check("coder", "network", "example.org").allowed


def test_ensure_permissions_is_idempotent_and_only_adds() -> None:
    policy = AccessPolicy()
    args = {"tools": ["fs.read"], "workspace": "/srv/work/**", "network": False, "role": "operator"}

    first = policy.ensure_permissions("coder", **args)  # type: ignore[arg-type]
    snapshot = (
        sorted(policy.get("coder").roles),
        list(policy.get("coder").tools),
        list(policy.get("coder").paths),
        policy.get("coder").network,
    )
    second = policy.ensure_permissions("coder", **args)  # type: ignore[arg-type]

    assert first
    assert not second
    assert snapshot == (
        sorted(policy.get("coder").roles),
        list(policy.get("coder").tools),
        list(policy.get("coder").paths),
        policy.get("coder").network,
    )
    assert ["operator"] == snapshot[0]
    assert not snapshot[3], "network stays off unless asked for"


def test_ensure_permissions_validates_everything_before_changing_anything() -> None:
    policy = AccessPolicy()

    with pytest.raises(InvalidPattern):
        policy.ensure_permissions(
            "coder", tools=["ok"], workspace="[", network=False, role="operator"
        )
    with pytest.raises(UnknownRole):
        policy.ensure_permissions(
            "coder", tools=["ok"], workspace="/w/**", network=False, role="boss"
        )

    assert "coder" not in policy.subjects


# --- Paths: normalisation against the real filesystem ------------------------------------


def test_a_path_inside_the_workspace_is_granted(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    decision = policy.check("coder", "read", f"{root}/work/src/a.py")

    assert decision.allowed
    assert f"matches '{root}/work/**'" in decision.reason


def test_the_workspace_directory_itself_matches_its_globstar(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    assert policy.check("coder", "list", f"{root}/work").allowed
    assert not policy.check("coder", "list", f"{root}/workshop").allowed


def test_dot_dot_that_escapes_the_workspace_is_denied(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    decision = policy.check("coder", "read", f"{root}/work/src/../../secret/key")

    assert not decision.allowed
    assert str(root / "secret" / "key") == decision.resolved
    assert f"resolved to '{root}/secret/key'" in decision.reason


def test_dot_dot_that_stays_inside_the_workspace_is_granted(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    decision = policy.check("coder", "read", f"{root}/work/src/../.git/config")

    assert decision.allowed
    assert f"{root}/work/.git/config" == decision.resolved


def test_repeated_slashes_are_collapsed_before_matching(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    inside = policy.check("coder", "read", f"/{root}//work///src/a.py")
    outside = policy.check("coder", "read", f"{root}//work//..//secret//key")

    assert inside.allowed
    assert f"{root}/work/src/a.py" == inside.resolved
    assert not outside.allowed
    assert "//etc" != normalise_path("//etc")


def test_a_symlink_leading_outside_the_workspace_is_denied(root: Path) -> None:
    (root / "work" / "escape").symlink_to(root / "secret")
    (root / "work" / "key-link").symlink_to(root / "secret" / "key")
    policy = agent_policy(f"{root}/work/**")

    through_dir = policy.check("coder", "read", f"{root}/work/escape/key")
    file_link = policy.check("coder", "write", f"{root}/work/key-link")

    assert not through_dir.allowed
    assert f"{root}/secret/key" == through_dir.resolved
    assert not file_link.allowed


def test_a_symlink_staying_inside_the_workspace_is_granted(root: Path) -> None:
    (root / "work" / "alias").symlink_to(root / "work" / "src")
    policy = agent_policy(f"{root}/work/**")

    decision = policy.check("coder", "read", f"{root}/work/alias/a.py")

    assert decision.allowed
    assert f"{root}/work/src/a.py" == decision.resolved


def test_a_workspace_given_through_a_symlink_is_granted_as_its_real_directory(
    root: Path,
) -> None:
    (root / "link-to-work").symlink_to(root / "work")
    resolved = AccessPolicy().resolve_pattern(f"{root}/link-to-work/**")
    policy = agent_policy(resolved)

    assert f"{root}/work/**" == resolved
    assert policy.check("coder", "read", f"{root}/work/src/a.py").allowed
    assert policy.check("coder", "read", f"{root}/link-to-work/src/a.py").allowed
    assert not policy.check("coder", "read", f"{root}/secret/key").allowed


def test_a_directory_swapped_for_a_symlink_after_the_grant_does_not_move_it(root: Path) -> None:
    """Another agent replaces the (not yet created) workspace by a link to a secret tree."""
    policy = agent_policy(AccessPolicy().resolve_pattern(f"{root}/later/**"))
    (root / "later").symlink_to(root / "secret")

    decision = policy.check("coder", "read", f"{root}/later/key")

    assert not decision.allowed
    assert f"{root}/secret/key" == decision.resolved


def test_resolving_keeps_glob_characters_of_real_names_literal(root: Path) -> None:
    (root / "odd[1]*").mkdir()
    (root / "odd-link").symlink_to(root / "odd[1]*")
    policy = AccessPolicy()

    resolved = policy.resolve_pattern(f"{root}/odd-link/*.txt")

    pattern = parse_path_pattern(resolved)
    assert pattern.matches(f"{root}/odd[1]*/a.txt")
    assert not pattern.matches(f"{root}/odd1x/a.txt")
    assert f"{root}/odd[[]1][*]/*.txt" == resolved


def test_a_symlink_to_a_parent_is_followed_not_trusted(root: Path) -> None:
    (root / "work" / "up").symlink_to(root)
    policy = agent_policy(f"{root}/work/**")

    assert not policy.check("coder", "read", f"{root}/work/up/secret/key").allowed
    assert policy.check("coder", "read", f"{root}/work/up/work/src/a.py").allowed


def test_paths_that_do_not_exist_yet_are_matched_lexically(root: Path) -> None:
    policy = agent_policy(f"{root}/work/**")

    assert policy.check("coder", "write", f"{root}/work/new/dir/file.txt").allowed
    assert not policy.check("coder", "write", f"{root}/work/new/../../x").allowed


def test_no_path_patterns_means_no_path_access(root: Path) -> None:
    policy = agent_policy()

    decision = policy.check("coder", "read", f"{root}/work/src/a.py")

    assert not decision.allowed
    assert "matches no allowed path of 'coder'" in decision.reason


# --- Pattern grammar --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/srv/work/**", "/srv/work", True),
        ("/srv/work/**", "/srv/work/a/b/c.txt", True),
        ("/srv/work/**", "/srv/workshop/a", False),
        ("/srv/work/*", "/srv/work/a", True),
        ("/srv/work/*", "/srv/work/a/b", False),
        ("/srv/work/*", "/srv/work", False),
        ("/srv/*/logs/**", "/srv/app/logs/x.log", True),
        ("/srv/*/logs/**", "/srv/a/b/logs/x.log", False),
        ("/srv/**/logs", "/srv/logs", True),
        ("/srv/**/logs", "/srv/a/b/logs", True),
        ("/srv/**/logs", "/srv/a/b/logs/x", False),
        ("/srv/w?rk/*.py", "/srv/work/a.py", True),
        ("/srv/w?rk/*.py", "/srv/wrk/a.py", False),
        ("/srv/[wx]ork/**", "/srv/xork/a", True),
        ("/srv/[!w]ork/**", "/srv/work/a", False),
        ("/srv/[!w]ork/**", "/srv/bork/a", True),
        ("/srv/work/*", "/srv/work/.hidden", True),
        ("/srv/a.b", "/srv/aXb", False),
        ("/", "/", True),
        ("/**", "/anything/at/all", True),
    ],
)
def test_path_pattern_grammar(pattern: str, path: str, expected: bool) -> None:
    assert expected == parse_path_pattern(pattern).matches(path)


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        ("", "must not be empty"),
        ("[", "must be absolute"),
        ("/srv/[", "unclosed '['"),
        ("/srv/[]", "unclosed '['"),
        ("/srv/[!", "unclosed '['"),
        ("/srv/[a/b]", "unclosed '['"),
        ("relative/**", "must be absolute"),
        ("/srv/../etc", "'..' components"),
        ("/srv/./work", "'.' components"),
        ("/srv/a**", "whole component"),
        ("/srv/[z-a]", "bad character set"),
        ("/srv/\x00", "NUL"),
    ],
)
def test_invalid_path_patterns_are_rejected(pattern: str, complaint: str) -> None:
    with pytest.raises(InvalidPattern, match=complaint.replace("[", r"\[").replace(".", r"\.")):
        parse_path_pattern(pattern)


def test_path_patterns_are_normalised() -> None:
    assert "/srv/work/**" == parse_path_pattern("//srv//work/**/").text
    assert "/" == parse_path_pattern("///").text


def test_set_operations_in_brackets_are_literal_members() -> None:
    pattern = parse_path_pattern("/x/[&~|]")

    assert pattern.matches("/x/&")
    assert pattern.matches("/x/|")
    assert not pattern.matches("/x/a")


@pytest.mark.parametrize("pattern", ["", "[", "fs.[", "has space", "tab\tbed"])
def test_invalid_tool_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(InvalidPattern):
        check_tool_pattern(pattern)


def test_tool_globs_use_fnmatch_case_sensitively() -> None:
    policy = agent_policy(tools=("fs.*", "git.[sc]*", "exact"))

    assert policy.check("coder", "execute", "fs.read").allowed
    assert policy.check("coder", "execute", "git.status").allowed
    assert policy.check("coder", "execute", "exact").allowed
    assert not policy.check("coder", "execute", "git.push").allowed
    assert not policy.check("coder", "execute", "FS.read").allowed
    assert not policy.check("coder", "execute", "exactly").allowed


def test_network_follows_the_subjects_switch() -> None:
    off = agent_policy(network=False)
    on = agent_policy(network=True)

    assert "network access is off for 'coder'" == off.check("coder", "network", "h").reason
    assert on.check("coder", "network", "h").allowed


def test_set_permissions_replaces_only_the_given_parts() -> None:
    policy = agent_policy("/a/**", tools=("t1",), network=True)

    changed = policy.set_permissions("coder", paths=["/b/**", "/b/**"])

    held = policy.get("coder")
    assert changed
    assert ["/b/**"] == held.paths
    assert ["t1"] == held.tools
    assert held.network
    assert not policy.set_permissions("coder", paths=["/b/**"])


# --- Tools, programs, revocation -------------------------------------------------------------


def _agent(policy: AccessPolicy, *, tools: list[str], programs: list[str] = ()) -> None:
    policy.ensure_permissions(
        "a", tools=tools, programs=list(programs), workspace="/w/**", network=False, role="operator"
    )


def test_a_file_tool_needs_its_tool_glob_and_the_path() -> None:
    policy = AccessPolicy(resolve=lambda p: p)
    _agent(policy, tools=["read_file"])

    allowed = policy.check("a", "read", "/w/x", tool="read_file")
    wrong_tool = policy.check("a", "write", "/w/x", tool="write_file")
    outside = policy.check("a", "read", "/etc/passwd", tool="read_file")

    assert allowed.allowed
    assert not wrong_tool.allowed
    assert "tool 'write_file' matches no allowed tool" in wrong_tool.reason
    assert not outside.allowed


@pytest.mark.parametrize(
    ("programs", "program", "allowed"),
    [
        (["ls"], "/usr/bin/ls", True),
        (["ls"], "/w/ls", False),  # a program the agent wrote is not "ls"
        (["ls"], "/usr/bin/rm", False),
        (["py*"], "/usr/bin/python3", True),
        (["/w/bin/*"], "/w/bin/tool", True),
        (["/w/bin/*"], "/w/other/tool", False),
        ([], "/usr/bin/ls", False),
    ],
)
def test_run_command_runs_only_granted_programs(
    programs: list[str], program: str, allowed: bool
) -> None:
    policy = AccessPolicy(resolve=lambda p: p)
    _agent(policy, tools=["*"], programs=programs)

    decision = policy.check("a", "execute", program, tool="run_command")

    assert allowed == decision.allowed, decision.reason


def test_tools_star_no_longer_lets_any_command_through() -> None:
    policy = AccessPolicy(resolve=lambda p: p)
    _agent(policy, tools=["*"])

    decision = policy.check("a", "execute", "/bin/sh", tool="run_command")

    assert not decision.allowed
    assert "matches no allowed program" in decision.reason
    with pytest.raises(InvalidResource):
        policy.check("a", "execute", "sh -c 'curl evil'", tool="run_command")


def test_revoking_takes_every_grant() -> None:
    policy = AccessPolicy(resolve=lambda p: p)
    _agent(policy, tools=["*"], programs=["ls"])

    assert policy.revoke_permissions("a")
    assert not policy.check("a", "read", "/w/x", tool="read_file").allowed
    assert not policy.revoke_permissions("a")
