"""Model faults as an ``openai`` client sees them, from the embedded model and from the
fault-injecting proxy in front of it: each fault as its error or broken answer, answers
unchanged without a fault, and a request log that the retry-budget check reads.

Servers run in threads of the test process on free ports; the proxy's command runs in its own
process (marked ``integration``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from actors.model.faults import FaultSpec, check_llm_budget, planned_hits
from actors.model.proxy import FaultProxy
from actors.model.server import ModelServer
from tests.integration.test_model_server import TOOLS, conversation

Endpoint = ModelServer | FaultProxy

WRITE = "write a haiku about supervision to h.txt"
EXPLAIN = "Explain supervision"


@pytest.fixture
def upstream() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture
def proxy(upstream: ModelServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url) as front:
        yield front


@pytest.fixture(params=["model", "proxy"])
def endpoint(request: pytest.FixtureRequest, upstream: ModelServer) -> Iterator[Endpoint]:
    """The embedded model itself, or the proxy in front of it: faults behave the same."""
    if request.param == "model":
        yield upstream
        return
    with FaultProxy(upstream.url) as front:
        yield front


def _client(endpoint: Endpoint, **options: Any) -> openai.OpenAI:
    settings: dict[str, Any] = {"api_key": "k", "max_retries": 0, "timeout": 10.0, **options}
    return openai.OpenAI(base_url=endpoint.url, **settings)


def _ask(client: openai.OpenAI, goal: str = WRITE, **options: Any) -> Any:
    return client.chat.completions.create(
        model="m",
        messages=conversation(goal),  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        **options,
    )


def _http(
    endpoint: Endpoint, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(  # noqa: S310 - the test's own local server
        endpoint.url.removesuffix("/v1") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _log(endpoint: Endpoint) -> list[dict[str, Any]]:
    assert endpoint.wait_idle(5.0)
    return [record.model_dump(mode="json") for record in endpoint.log()]


# --- faults as the client sees them ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options", "error", "status"),
    [
        ("429", {"retry_after": 0.25}, openai.RateLimitError, 429),
        ("500", {}, openai.InternalServerError, 500),
        ("502", {}, openai.InternalServerError, 502),
        ("503", {}, openai.InternalServerError, 503),
        ("5xx", {"status": 504}, openai.InternalServerError, 504),
        ("401", {}, openai.AuthenticationError, 401),
    ],
)
def test_a_status_fault_is_the_clients_error_once(
    endpoint: Endpoint,
    kind: str,
    options: dict[str, Any],
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    endpoint.inject(kind, **options)  # type: ignore[arg-type]
    with _client(endpoint) as client:
        with pytest.raises(error) as caught:
            _ask(client)
        after = _ask(client)

    assert status == caught.value.status_code
    assert "tool_calls" == after.choices[0].finish_reason
    if kind == "429":
        assert "0.25" == caught.value.response.headers["retry-after"]
    log = _log(endpoint)
    assert [(status, kind), (200, None)] == [(r["status"], r["fault"]) for r in log]
    assert (0.25 if kind == "429" else None) == log[0]["retry_after"]


def test_a_timeout_outlasts_an_impatient_client(endpoint: Endpoint) -> None:
    endpoint.inject("timeout", seconds=30)
    with (
        _client(endpoint, timeout=0.3) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        _ask(impatient)

    record = _log(endpoint)[-1]
    assert ("timeout", None, True) == (record["fault"], record["status"], record["disconnected"])


def test_a_timeout_closes_the_request_without_an_answer(endpoint: Endpoint) -> None:
    endpoint.inject("timeout", seconds=0.05)
    with _client(endpoint) as patient:
        with pytest.raises(openai.APIConnectionError) as caught:
            _ask(patient)
        after = _ask(patient)

    assert not isinstance(caught.value, openai.APITimeoutError)
    assert "tool_calls" == after.choices[0].finish_reason
    record = _log(endpoint)[0]
    assert ("timeout", None, False) == (record["fault"], record["status"], record["disconnected"])


def test_a_hang_delays_a_normal_answer(endpoint: Endpoint) -> None:
    endpoint.inject("hang", seconds=0.05)
    with _client(endpoint) as client:
        completion = _ask(client)

    assert "write_file" == completion.choices[0].message.tool_calls[0].function.name
    assert [(200, "hang")] == [(r["status"], r["fault"]) for r in _log(endpoint)]


def test_truncated_answers_are_cut_with_finish_reason_length(endpoint: Endpoint) -> None:
    with _client(endpoint) as client:
        whole_text = _ask(client, EXPLAIN).choices[0].message.content
        endpoint.inject("truncated", count=2)
        call = _ask(client)
        text = _ask(client, EXPLAIN)

    arguments = call.choices[0].message.tool_calls[0].function.arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)
    assert ["length", "length"] == [call.choices[0].finish_reason, text.choices[0].finish_reason]
    assert whole_text[: len(whole_text) // 2] == text.choices[0].message.content
    assert [None, "truncated", "truncated"] == [r["fault"] for r in _log(endpoint)]
    assert "length" == _log(endpoint)[-1]["finish_reason"]


def test_a_malformed_tool_call_has_arguments_that_are_not_json(endpoint: Endpoint) -> None:
    endpoint.inject("malformed_tool_call")
    with _client(endpoint) as client:
        broken = _ask(client)

    call = broken.choices[0].message.tool_calls[0]
    assert "write_file" == call.function.name
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)


def test_a_seeded_probability_hits_the_planned_requests(endpoint: Endpoint) -> None:
    spec = endpoint.inject("503", count=None, probability=0.3, seed=11)
    with _client(endpoint) as client:
        for _ in range(30):
            try:
                _ask(client)
            except openai.InternalServerError:
                pass

    hit = [i for i, r in enumerate(_log(endpoint)) if r["status"] == 503]
    assert planned_hits(spec, 30) == hit
    assert 0 < len(hit) < 30


def test_every_nth_request_is_hit(endpoint: Endpoint) -> None:
    endpoint.inject("429", count=2, every_nth=3, retry_after=0)
    with _client(endpoint) as client:
        for _ in range(9):
            try:
                _ask(client)
            except openai.RateLimitError:
                pass

    assert [2, 5] == [i for i, r in enumerate(_log(endpoint)) if r["status"] == 429]


# --- the request log -----------------------------------------------------------------------


def test_the_log_names_each_client_and_is_served_as_json(endpoint: Endpoint) -> None:
    with _client(endpoint) as client:
        _ask(client, extra_headers={"X-Understudy-Agent": "root/agents/poet"})
        _ask(client)
        _ask(client)

    log = _log(endpoint)
    status, served = _http(endpoint, "GET", "/_control/log")
    assert (200, {"log": log}) == (status, served)
    assert ["root/agents/poet", None, None] == [r["agent"] for r in log]
    assert "root/agents/poet" == log[0]["fingerprint"]
    assert log[1]["fingerprint"] == log[2]["fingerprint"] == log[0]["conversation"]
    assert all(r["monotonic"] <= r["finished_monotonic"] for r in log)


def test_a_client_that_waits_out_retry_after_keeps_the_budget(endpoint: Endpoint) -> None:
    endpoint.inject("429", count=2, retry_after=0.2)
    with _client(endpoint, max_retries=2) as client:
        completion = _ask(client)

    ok, detail, counterexample = check_llm_budget(endpoint.log(), max_retries=2)

    assert "tool_calls" == completion.choices[0].finish_reason
    assert [429, 429, 200] == [r["status"] for r in _log(endpoint)]
    assert (True, None) == (ok, counterexample), detail


def test_a_client_that_retries_at_once_breaks_the_budget(endpoint: Endpoint) -> None:
    endpoint.inject("429", retry_after=30)
    with _client(endpoint) as client:
        with pytest.raises(openai.RateLimitError):
            _ask(client)
        _ask(client)

    ok, _, counterexample = check_llm_budget(_log(endpoint), max_retries=3)

    assert not ok
    assert counterexample is not None
    assert ("retry_after", 30.0) == (counterexample["rule"], counterexample["retry_after"])


# --- the proxy's own behaviour ----------------------------------------------------------------


def test_without_a_fault_the_answer_is_the_upstreams(
    upstream: ModelServer, proxy: FaultProxy
) -> None:
    def raw(base: str, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(base + path, timeout=10) as reply:  # noqa: S310
            return reply.status, reply.read()

    with _client(upstream) as direct, _client(proxy) as through:
        expected = _ask(direct).model_dump()
        answer = _ask(through).model_dump()

    assert raw(upstream.url, "/models") == raw(proxy.url, "/models")
    for varying in ("id", "created"):
        expected.pop(varying), answer.pop(varying)
    assert expected == answer
    assert [(200, None)] == [(r["status"], r["fault"]) for r in _log(proxy)]


def test_the_authorization_header_reaches_the_upstream() -> None:
    with ModelServer(api_key="sesame") as guarded, FaultProxy(guarded.url) as front:
        with _client(front, api_key="sesame") as right:
            assert "tool_calls" == _ask(right).choices[0].finish_reason
        with _client(front, api_key="wrong") as wrong, pytest.raises(openai.AuthenticationError):
            _ask(wrong)
        log = _log(front)

    assert [(200, None), (401, None)] == [(r["status"], r["fault"]) for r in log]


def test_control_endpoints_queue_and_clear_faults(proxy: FaultProxy) -> None:
    queued = _http(proxy, "POST", "/_control/faults", {"faults": [{"kind": "500", "count": 2}]})
    status, stats = _http(proxy, "GET", "/_control/stats")
    cleared = _http(proxy, "DELETE", "/_control/faults")
    invalid = _http(proxy, "POST", "/_control/faults", {"faults": [{"kind": "teapot"}]})
    with _client(proxy) as client:
        assert "tool_calls" == _ask(client).choices[0].finish_reason

    assert (200, {"queued": 1}) == queued
    assert (200, [2]) == (status, [f["count"] for f in stats["pending_faults"]])
    assert (200, {"cleared": 2}) == cleared
    assert 400 == invalid[0]


def test_a_control_key_guards_the_control_endpoints(upstream: ModelServer) -> None:
    faults = {"faults": [{"kind": "500"}]}
    with FaultProxy(upstream.url, control_key="c-key") as front:
        refused = [
            _http(front, "POST", "/_control/faults", faults)[0],
            _http(front, "GET", "/_control/log", key="wrong")[0],
            _http(front, "DELETE", "/_control/faults")[0],
        ]
        accepted = _http(front, "POST", "/_control/faults", faults, key="c-key")

    assert [401, 401, 401] == refused
    assert (200, {"queued": 1}) == accepted


def test_inject_specs_queues_specs_in_order(proxy: FaultProxy) -> None:
    queued = proxy.inject_specs([FaultSpec(kind="401"), {"kind": "5xx", "status": 507}])
    with _client(proxy) as client:
        with pytest.raises(openai.AuthenticationError):
            _ask(client)
        with pytest.raises(openai.InternalServerError):
            _ask(client)

    assert ["401", "5xx"] == [spec.kind for spec in queued]
    assert [401, 507] == [r["status"] for r in _log(proxy)]


def test_an_unreachable_upstream_is_a_bad_gateway() -> None:
    with ModelServer() as gone:
        url = gone.url
    with FaultProxy(url) as front, _client(front) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            _ask(client)
        log = _log(front)

    assert 502 == caught.value.status_code
    assert [502] == [r["status"] for r in log]


def test_stopping_the_proxy_ends_a_held_request(upstream: ModelServer) -> None:
    front = FaultProxy(upstream.url)
    front.start()
    try:
        front.inject("timeout", seconds=60)
        with _client(front, timeout=30.0) as patient, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_ask, patient)
            assert front.wait_requests(1, timeout=5.0)
            front.stop()
            with pytest.raises(openai.APIConnectionError):
                pending.result(timeout=10.0)
    finally:
        front.stop()

    assert [("timeout", True)] == [(r.fault, r.disconnected) for r in front.log()]


@pytest.mark.integration
def test_the_proxy_command_announces_its_url_forwards_and_stops_on_sigterm(
    upstream: ModelServer,
) -> None:
    command = [sys.executable, "-m", "actors.model.proxy", "--upstream", upstream.url]
    proc = subprocess.Popen(
        [*command, "--port", "0", "--log-json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        events = (json.loads(line) for line in proc.stderr)
        ready = next(e for e in events if e.get("event") == "fault_proxy_ready")
        front = openai.OpenAI(base_url=ready["url"], api_key="k", max_retries=0, timeout=10)
        with front as client:
            answer = _ask(client)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()

    assert ready["url"].startswith("http://127.0.0.1:")
    assert "tool_calls" == answer.choices[0].finish_reason
    assert 0 == code
