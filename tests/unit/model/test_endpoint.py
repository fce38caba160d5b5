"""Which model endpoint a deployment uses: model block, URL, key alone, or the simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.model.endpoint import (
    DEFAULT_PROVIDER_MODEL,
    EMBEDDED_MODEL,
    PROVIDER_DEFAULT_URL,
    resolve_model_endpoint,
)
from protocols.topology import ModelConfig


def test_a_key_alone_means_the_providers_default_endpoint_never_the_simulator() -> None:
    endpoint = resolve_model_endpoint(None, {"OPENAI_API_KEY": "sk-real"})

    assert "OPENAI_API_KEY" == endpoint.source
    assert not endpoint.embedded
    assert PROVIDER_DEFAULT_URL == endpoint.base_url
    assert "sk-real" == endpoint.api_key
    assert DEFAULT_PROVIDER_MODEL == endpoint.model


def test_a_key_alone_with_a_chosen_model_keeps_the_model() -> None:
    endpoint = resolve_model_endpoint(
        None, {"OPENAI_API_KEY": "sk-real", "UNDERSTUDY_MODEL": "gpt-4.1"}
    )

    assert "gpt-4.1" == endpoint.model


def test_the_simulator_runs_only_when_nothing_is_configured() -> None:
    endpoint = resolve_model_endpoint(None, {"OPENAI_API_KEY": "", "PATH": "/bin"})

    assert endpoint.embedded
    assert endpoint.base_url is None
    assert endpoint.api_key is None
    assert EMBEDDED_MODEL == endpoint.model


def test_a_base_url_is_used_as_is_with_the_key_when_there_is_one() -> None:
    endpoint = resolve_model_endpoint(
        None, {"OPENAI_BASE_URL": "http://local:8000/v1", "OPENAI_API_KEY": "k"}
    )

    assert ("OPENAI_BASE_URL", "http://local:8000/v1", "k") == (
        endpoint.source,
        endpoint.base_url,
        endpoint.api_key,
    )


def test_the_model_block_wins_over_the_environment() -> None:
    block = ModelConfig(base_url="http://model:8000/v1", api_key_env="MY_KEY", model="m1")

    endpoint = resolve_model_endpoint(
        block,
        {"OPENAI_BASE_URL": "http://elsewhere/v1", "MY_KEY": "secret", "UNDERSTUDY_MODEL": "x"},
    )

    assert ("topology", "http://model:8000/v1", "m1", "secret") == (
        endpoint.source,
        endpoint.base_url,
        endpoint.model,
        endpoint.api_key,
    )


def test_export_never_gives_the_simulator_a_real_key_and_keeps_a_real_one() -> None:
    embedded = replace(resolve_model_endpoint(None, {}), base_url="http://127.0.0.1:1/v1")
    provider = resolve_model_endpoint(None, {"OPENAI_API_KEY": "sk-real"})
    into_embedded: dict[str, str] = {}
    into_provider = {"OPENAI_API_KEY": "sk-real"}

    embedded.export(into_embedded)
    provider.export(into_provider)

    assert "http://127.0.0.1:1/v1" == into_embedded["OPENAI_BASE_URL"]
    assert "sk-real" != into_embedded["OPENAI_API_KEY"]
    assert PROVIDER_DEFAULT_URL == into_provider["OPENAI_BASE_URL"]
    assert "sk-real" == into_provider["OPENAI_API_KEY"]


def test_export_of_an_unstarted_simulator_is_refused() -> None:
    with pytest.raises(ValueError, match="until it is started"):
        resolve_model_endpoint(None, {}).export({})


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"OPENAI_API_KEY": "k"}, "provider's default endpoint"),
        ({}, "embedded simulator"),
        ({"OPENAI_BASE_URL": "http://x/v1"}, "from OPENAI_BASE_URL"),
    ],
)
def test_the_description_says_where_the_endpoint_came_from(
    environ: dict[str, str], words: str
) -> None:
    assert words in resolve_model_endpoint(None, environ).describe()
