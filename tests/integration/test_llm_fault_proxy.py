"""The fault-injecting proxy in front of an OpenAI-compatible endpoint (here the embedded
model): unchanged answers without a fault, each fault as an OpenAI client sees it, a log."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from actors.model.proxy import FaultProxy
from actors.model.server import ModelServer
from tests.integration.test_model_server import TOOLS, conversation


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with ModelServer() as upstream, FaultProxy(upstream.url) as front:
        yield front


def _client(proxy: FaultProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0, timeout=10.0)


def _ask(client: openai.OpenAI, goal: str = "write a haiku about supervision to h.txt") -> Any:
    return client.chat.completions.create(
        model="m",
        messages=conversation(goal),  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
    )


def test_without_a_fault_the_answer_is_the_upstreams(proxy: FaultProxy) -> None:
    with _client(proxy) as client:
        first, second = _ask(client), _ask(client)
    assert first.choices[0].message.tool_calls == second.choices[0].message.tool_calls
    assert "tool_calls" == first.choices[0].finish_reason
    assert [200, 200] == [r["status"] for r in proxy.request_log()]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("429", openai.RateLimitError),
        ("503", openai.InternalServerError),
        ("401", openai.AuthenticationError),
    ],
)
def test_a_status_fault_is_the_clients_error_once(
    proxy: FaultProxy, kind: str, error: type[openai.APIStatusError]
) -> None:
    proxy.inject(kind, retry_after=0.25)
    with _client(proxy) as client:
        with pytest.raises(error) as caught:
            _ask(client)
        assert "tool_calls" == _ask(client).choices[0].finish_reason
    assert int(kind) == caught.value.status_code
    if kind == "429":
        assert "0.25" == caught.value.response.headers["retry-after"]
    assert [(int(kind), kind), (200, None)] == [
        (r["status"], r["fault"]) for r in proxy.request_log()
    ]


@pytest.mark.parametrize("kind", ["truncated", "malformed_tool_call"])
def test_a_broken_answer_has_arguments_that_are_not_json(proxy: FaultProxy, kind: str) -> None:
    proxy.inject(kind)
    with _client(proxy) as client:
        broken = _ask(client)
    arguments = broken.choices[0].message.tool_calls[0].function.arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)
    if kind == "truncated":
        assert "length" == broken.choices[0].finish_reason


def test_control_endpoints_queue_and_clear_faults(proxy: FaultProxy) -> None:
    assert proxy.url is not None
    base = proxy.url.removesuffix("/v1")
    body = json.dumps({"faults": [{"kind": "500", "count": 2}]}).encode()
    queued = urllib.request.Request(f"{base}/_control/faults", data=body, method="POST")  # noqa: S310
    with urllib.request.urlopen(queued, timeout=5) as reply:  # noqa: S310
        assert {"queued": 1} == json.loads(reply.read())
    cleared = urllib.request.Request(f"{base}/_control/faults", method="DELETE")  # noqa: S310
    with urllib.request.urlopen(cleared, timeout=5) as reply:  # noqa: S310
        assert {"cleared": 2} == json.loads(reply.read())
    with _client(proxy) as client:
        assert "tool_calls" == _ask(client).choices[0].finish_reason
