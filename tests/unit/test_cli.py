"""How `understudy up` points agents at a model: topology block, environment, or embedded."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner

from actors.cli import _configure_model, main
from actors.core.keyring import create_key_file, key_id, read_key_file
from protocols.topology import ModelConfig, SupervisorSpec, SystemConfig, Topology


def _topology(model: ModelConfig | None = None) -> Topology:
    return Topology(system=SystemConfig(model=model), root=SupervisorSpec(id="root"))


def test_the_topology_model_block_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere/v1")
    monkeypatch.setenv("MY_KEY", "secret")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # restored after the test
    monkeypatch.delenv("UNDERSTUDY_MODEL", raising=False)

    endpoint, server = _configure_model(
        _topology(ModelConfig(base_url="http://model:8000/v1", api_key_env="MY_KEY", model="m1"))
    )

    assert server is None
    assert "topology" == endpoint.source
    assert "http://model:8000/v1" == os.environ["OPENAI_BASE_URL"]
    assert "secret" == os.environ["OPENAI_API_KEY"]
    assert "m1" == os.environ["UNDERSTUDY_MODEL"]


def test_an_openai_base_url_in_the_environment_is_used_as_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere/v1")

    endpoint, server = _configure_model(_topology())

    assert server is None
    assert "http://elsewhere/v1" == endpoint.base_url == os.environ["OPENAI_BASE_URL"]


def test_a_key_alone_starts_no_simulator_and_keeps_the_key_for_the_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("UNDERSTUDY_MODEL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")

    endpoint, server = _configure_model(_topology())

    assert server is None
    assert not endpoint.embedded
    assert "https://api.openai.com/v1" == os.environ["OPENAI_BASE_URL"]
    assert "sk-real" == os.environ["OPENAI_API_KEY"]


def test_without_any_endpoint_the_embedded_model_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    monkeypatch.delenv("UNDERSTUDY_MODEL", raising=False)

    endpoint, server = _configure_model(_topology())
    try:
        client = openai.OpenAI(
            base_url=os.environ["OPENAI_BASE_URL"],
            api_key=os.environ["OPENAI_API_KEY"],
            max_retries=0,
        )
        models = client.models.list()
    finally:
        assert server is not None
        server.stop()

    assert models.data
    assert endpoint.embedded
    assert endpoint.base_url == os.environ["OPENAI_BASE_URL"]


def test_secret_rotate_then_retire_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_key_file(path)
    [old] = read_key_file(path)

    rotated = CliRunner().invoke(main, ["secret", "rotate", f"--file={path}"])
    keys = read_key_file(path)
    retired = CliRunner().invoke(main, ["secret", "retire", f"--file={path}"])

    assert 0 == rotated.exit_code, rotated.output
    assert [old] == keys[1:]
    assert key_id(keys[0]) in rotated.output
    assert 0 == retired.exit_code, retired.output
    assert key_id(old) in retired.output
    assert [keys[0]] == read_key_file(path)


def test_secret_rotate_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_key_file(path)
    path.chmod(0o644)

    result = CliRunner().invoke(main, ["secret", "rotate", f"--file={path}"])

    assert 1 == result.exit_code
    assert "0644" in result.output


def test_audit_verify_names_the_edited_line_and_needs_the_secret(tmp_path: Path) -> None:
    from actors.core.keyring import Keyring
    from actors.services.access_audit import AuditLog

    create_key_file(tmp_path / "secret")
    path = tmp_path / "audit.jsonl"
    log, _ = AuditLog.open(path, keyring=Keyring(tmp_path / "secret"))
    for n in range(3):
        log.append("decision", f"agent-{n}", "access_granted", {"n": n})
    log.close()
    intact = CliRunner().invoke(main, ["audit", "verify", f"--state-dir={tmp_path}"])
    raw = path.read_bytes().splitlines()
    raw[1] = raw[1].replace(b"agent-1", b"agent-9")
    path.write_bytes(b"\n".join(raw) + b"\n")
    edited = CliRunner().invoke(main, ["audit", "verify", f"--state-dir={tmp_path}"])
    (tmp_path / "secret").unlink()
    keyless = CliRunner().invoke(main, ["audit", "verify", f"--state-dir={tmp_path}"])

    assert 0 == intact.exit_code, intact.output
    assert "ok, 3 entries" in _flat(intact.output)
    assert 1 == edited.exit_code
    assert "line 1: hash does not verify under the deployment secret" in _flat(edited.output)
    assert 1 == keyless.exit_code
    assert "cannot verify without the deployment secret" in _flat(keyless.output)


def _flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())
