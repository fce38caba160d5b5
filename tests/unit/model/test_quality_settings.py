"""Where the embedded model's quality comes from: arguments, the environment, errors named."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from actors.cli import main
from actors.model.brain import Quality
from actors.model.server import QUALITY_ENV, SEED_ENV, ModelServer, quality_from_env


def test_quality_defaults_to_one_and_is_read_from_the_environment() -> None:
    assert (1.0, 0) == quality_from_env({})
    assert (0.25, 9) == quality_from_env({QUALITY_ENV: "0.25", SEED_ENV: "9"})


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({QUALITY_ENV: "1.5"}, QUALITY_ENV),
        ({QUALITY_ENV: "good"}, QUALITY_ENV),
        ({SEED_ENV: "x"}, SEED_ENV),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        quality_from_env(environ)


def test_a_quality_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Quality(-0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ModelServer(quality=2.0)


def test_the_model_server_command_refuses_a_bad_environment_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(QUALITY_ENV, "lots")

    result = CliRunner().invoke(main, ["model-server", "--port", "0"])

    assert 0 != result.exit_code
    assert QUALITY_ENV in result.output
