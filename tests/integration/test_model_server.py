"""The embedded model server driven over real HTTP by the real ``openai`` client.

The server runs in a thread of the test process (no ActorSystem, no extra process).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from pydantic import ValidationError
from structlog.testing import capture_logs

from actors.model.server import SERVED_MODEL, ModelServer
from protocols.prompts import (
    agent_system_prompt,
    estimate_tokens,
    evaluation_prompt,
    format_tool_error,
    parse_evaluation,
    parse_specification,
    specification_prompt,
    tool_definitions,
)

TOOLS = tool_definitions()


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as srv:
        yield srv


def make_client(server: ModelServer, **options: Any) -> openai.OpenAI:
    settings: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, "timeout": 10.0}
    settings.update(options)
    return openai.OpenAI(base_url=server.url, **settings)


@pytest.fixture
def client(server: ModelServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as c:
        yield c


def conversation(goal: str, workspace: str = "/ws") -> list[dict[str, Any]]:
    system = agent_system_prompt(goal, goal, [], [], workspace)
    return [{"role": "system", "content": system}, {"role": "user", "content": "Begin."}]


def ask(client: openai.OpenAI, messages: list[dict[str, Any]], **kw: Any) -> ChatCompletion:
    kw.setdefault("tools", TOOLS)
    return client.chat.completions.create(model="understudy-test", messages=messages, **kw)  # type: ignore[arg-type]


def only_call(completion: ChatCompletion) -> tuple[str, dict[str, Any], str]:
    """Return (name, arguments, id) of the completion's single tool call."""
    calls = completion.choices[0].message.tool_calls or []
    assert 1 == len(calls)
    call = calls[0]
    assert "function" == call.type
    return call.function.name, json.loads(call.function.arguments), call.id  # type: ignore[union-attr]


def answer(messages: list[dict[str, Any]], completion: ChatCompletion, result: str) -> None:
    """Append the assistant's tool call and the tool's result to the conversation."""
    message = completion.choices[0].message
    messages.append(message.model_dump(exclude_none=True))
    _, _, call_id = only_call(completion)
    messages.append({"role": "tool", "tool_call_id": call_id, "content": result})


# --- agent conversations --------------------------------------------------------------------


def test_write_goal_calls_write_file_in_the_workspace_then_answers(client: openai.OpenAI) -> None:
    messages = conversation("write a haiku about supervision to haiku.txt")

    first = ask(client, messages)
    name, args, _ = only_call(first)
    answer(messages, first, "wrote 60 bytes")
    final = ask(client, messages)

    assert "tool_calls" == first.choices[0].finish_reason
    assert "write_file" == name
    assert "/ws/haiku.txt" == args["path"]
    lines = args["content"].strip().split("\n")
    assert 3 == len(lines)
    assert "supervision" in args["content"].lower()
    assert "stop" == final.choices[0].finish_reason
    assert final.choices[0].message.tool_calls is None
    assert "/ws/haiku.txt" in (final.choices[0].message.content or "")
    assert "haiku about supervision" in (final.choices[0].message.content or "")


def test_the_same_conversation_gets_the_same_tool_call(client: openai.OpenAI) -> None:
    messages = conversation("create notes.md with a list of the restart strategies")

    first, second = ask(client, messages), ask(client, messages)

    assert only_call(first) == only_call(second)
    name, args, _ = only_call(first)
    assert ("write_file", "/ws/notes.md") == (name, args["path"])
    assert "restart strategies" in args["content"]


def test_a_denied_write_is_reported_in_the_final_answer(client: openai.OpenAI) -> None:
    messages = conversation("save a note about escapes into ../outside.txt")

    first = ask(client, messages)
    answer(messages, first, format_tool_error("AccessDenied", "/outside.txt is not in /ws"))
    final = ask(client, messages)

    text = final.choices[0].message.content or ""
    assert "Could not write /ws/../outside.txt" in text
    assert "AccessDenied: /outside.txt is not in /ws" in text
    assert final.choices[0].message.tool_calls is None


def test_read_then_write_summary_chains_the_read_result(client: openai.OpenAI) -> None:
    messages = conversation("read a.txt and write its summary to b.txt")

    first = ask(client, messages)
    answer(messages, first, "Supervisors restart crashed children.\nTrees keep running.\n")
    second = ask(client, messages)
    answer(messages, second, "ok")
    final = ask(client, messages)

    assert ("read_file", {"path": "/ws/a.txt"}) == only_call(first)[:2]
    name, args, _ = only_call(second)
    assert ("write_file", "/ws/b.txt") == (name, args["path"])
    assert "Supervisors restart crashed children" in args["content"]
    text = final.choices[0].message.content or ""
    assert "Read /ws/a.txt (2 lines" in text
    assert "to /ws/b.txt" in text


def test_list_and_run_goals_call_their_tools_and_summarise(client: openai.OpenAI) -> None:
    messages = conversation("list src and then run `echo hi there`")

    first = ask(client, messages)
    answer(messages, first, '["main.py", "util.py"]')
    second = ask(client, messages)
    answer(messages, second, "hi there\n")
    final = ask(client, messages)

    assert ("list_directory", {"path": "/ws/src"}) == only_call(first)[:2]
    assert ("run_command", {"argv": ["echo", "hi", "there"]}) == only_call(second)[:2]
    text = final.choices[0].message.content or ""
    assert "/ws/src has 2 entries: main.py, util.py." in text
    assert "Ran `echo hi there`. Output: hi there" in text


def test_a_goal_it_does_not_understand_is_refused_plainly(client: openai.OpenAI) -> None:
    completion = ask(client, conversation("Explain why supervisors restart children"))

    message = completion.choices[0].message
    assert message.tool_calls is None
    assert "stop" == completion.choices[0].finish_reason
    assert message.refusal is not None
    assert message.refusal.startswith("I cannot do this goal")
    assert message.refusal == message.content


@pytest.mark.parametrize(
    "goal",
    [
        "write a python script that scrapes a website to scrape.py",
        "write a rust program that prints the first 10 primes to primes.rs",
        "write a picture of a cat to cat.png",
    ],
)
def test_a_write_it_cannot_make_is_refused_without_writing(
    client: openai.OpenAI, goal: str
) -> None:
    completion = ask(client, conversation(goal))

    message = completion.choices[0].message
    assert message.tool_calls is None
    assert "cannot" in (message.refusal or "")


def test_a_tool_missing_from_the_request_is_explained_instead_of_called(
    client: openai.OpenAI,
) -> None:
    completion = ask(
        client, conversation("write hello to h.txt"), tools=tool_definitions(["read_file"])
    )

    assert completion.choices[0].message.tool_calls is None
    assert "the write_file tool is not available" in (completion.choices[0].message.content or "")


def test_without_a_system_prompt_the_first_user_message_is_the_goal(client: openai.OpenAI) -> None:
    completion = ask(client, [{"role": "user", "content": 'write "hi" to greeting.txt'}])

    assert ("write_file", {"path": "greeting.txt", "content": "hi\n"}) == only_call(completion)[:2]


def test_usage_counts_the_completion_with_the_token_estimate(client: openai.OpenAI) -> None:
    short = conversation("Explain supervision")
    longer = conversation("Explain supervision " + "in great detail " * 40)

    small, big = ask(client, short), ask(client, longer)

    for completion in (small, big):
        usage = completion.usage
        assert usage is not None
        content = completion.choices[0].message.content or ""
        assert estimate_tokens(content) == usage.completion_tokens
        assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
    assert small.usage is not None
    assert big.usage is not None
    added = estimate_tokens("in great detail " * 40)
    assert big.usage.prompt_tokens - small.usage.prompt_tokens >= added


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    completion = ask(client, conversation("Explain supervision"), max_tokens=3)

    assert "length" == completion.choices[0].finish_reason
    assert 12 >= len(completion.choices[0].message.content or "")
    assert completion.usage is not None
    assert 3 == completion.usage.completion_tokens


def test_models_lists_the_stub_model(client: openai.OpenAI) -> None:
    assert [SERVED_MODEL] == [m.id for m in client.models.list()]


# --- evaluation and specification -----------------------------------------------------------


def test_evaluation_checks_the_files_and_leaves_the_rest_unverified(
    client: openai.OpenAI,
) -> None:
    criteria = [
        "haiku.txt exists",
        "haiku.txt mentions supervision",
        "haiku.txt has 5 lines",
        "the poem is purple",
    ]
    prompt = evaluation_prompt(
        "write a haiku",
        criteria,
        "Wrote a purple haiku of five lines to /ws/haiku.txt.",
        {"/ws/haiku.txt": "Calm supervision\nwatches\nrestarts\n"},
    )

    completion = ask(client, [{"role": "user", "content": prompt}], tools=None)
    evaluation = parse_evaluation(completion.choices[0].message.content or "")

    assert pytest.approx(2 / 4) == evaluation.score
    assert ("haiku.txt exists", "haiku.txt mentions supervision") == evaluation.met
    assert ("haiku.txt has 5 lines",) == evaluation.unmet
    assert ("the poem is purple",) == evaluation.unverified
    assert "3 lines, not 5" in evaluation.feedback


def test_specification_comes_from_the_message_clauses(client: openai.OpenAI) -> None:
    message = (
        "Write a haiku about supervision to haiku.txt so that it mentions restarts, "
        "without touching other files. It must have three lines."
    )

    completion = ask(
        client,
        [
            {"role": "system", "content": "You specify tasks."},
            {"role": "user", "content": specification_prompt(message)},
        ],
    )
    spec = parse_specification(completion.choices[0].message.content or "")

    assert message == spec.goal
    assert (
        "haiku.txt exists",
        "haiku.txt has 3 lines",
        "haiku.txt mentions supervision",
        "it mentions restarts",
        "It must have three lines",
    ) == spec.acceptance_criteria
    assert ("without touching other files",) == spec.constraints
    assert ("haiku.txt",) == spec.workspace_files


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("429", openai.RateLimitError, "rate_limit_exceeded"),
        ("500", openai.InternalServerError, "server_error"),
        ("502", openai.InternalServerError, "bad_gateway"),
        ("503", openai.InternalServerError, "overloaded"),
        ("401", openai.AuthenticationError, "invalid_api_key"),
        ("400", openai.BadRequestError, "context_length_exceeded"),
    ],
)
def test_each_status_fault_raises_its_openai_error_once(
    server: ModelServer,
    client: openai.OpenAI,
    kind: str,
    error: type[openai.APIStatusError],
    code: str,
) -> None:
    server.inject(kind)

    with pytest.raises(error) as caught:
        ask(client, conversation("Explain supervision"))
    after = ask(client, conversation("Explain supervision"))

    assert int(kind) == caught.value.status_code
    assert code == caught.value.code
    assert "stop" == after.choices[0].finish_reason
    assert {kind: 1} == _settled(server).faults_fired


def test_truncated_output_is_cut_with_finish_reason_length(
    server: ModelServer, client: openai.OpenAI
) -> None:
    messages = conversation("write a haiku about supervision to haiku.txt")
    whole = ask(client, messages)
    server.inject("truncated")
    cut = ask(client, messages)

    assert "length" == cut.choices[0].finish_reason
    whole_args = whole.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index]
    cut_args = cut.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index]
    assert whole_args.startswith(cut_args) and len(cut_args) < len(whole_args)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut_args)


def test_rate_limit_carries_retry_after(server: ModelServer, client: openai.OpenAI) -> None:
    server.inject("429", retry_after=0.25)

    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, conversation("Explain supervision"))

    assert "0.25" == caught.value.response.headers["retry-after"]
    assert "requests" == caught.value.type


def test_the_client_retry_waits_at_least_retry_after(server: ModelServer) -> None:
    server.inject(429, retry_after=0.3)

    with make_client(server, max_retries=1) as retrying:
        completion = ask(retrying, conversation("Explain supervision"))

    log = _settled(server).request_log
    assert "stop" == completion.choices[0].finish_reason
    assert [429, 200] == [r.status for r in log]
    assert log[1].at - log[0].at >= 0.3


def test_hang_outlasts_a_short_client_timeout_and_ends_when_the_client_leaves(
    server: ModelServer,
) -> None:
    server.inject("hang", seconds=30)
    started = time.monotonic()

    with make_client(server, timeout=0.3) as impatient, pytest.raises(openai.APITimeoutError):
        ask(impatient, conversation("Explain supervision"))
    idle = server.wait_idle(timeout=5.0)

    assert idle
    assert time.monotonic() - started < 5.0
    record = _settled(server).request_log[-1]
    assert (record.fault, record.disconnected, record.status) == ("hang", True, None)


def test_a_short_hang_delays_a_normal_answer(server: ModelServer, client: openai.OpenAI) -> None:
    server.inject("hang", seconds=0.2)
    started = time.monotonic()

    completion = ask(client, conversation("write a haiku about waiting to w.txt"))

    assert time.monotonic() - started >= 0.2
    assert "write_file" == only_call(completion)[0]


def test_stopping_the_server_ends_a_hanging_request(server: ModelServer) -> None:
    server.inject("hang", seconds=60)
    with make_client(server, timeout=30.0) as patient, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ask, patient, conversation("Explain supervision"))
        assert server.wait_requests(1, timeout=5.0)
        started = time.monotonic()

        server.stop()

        with pytest.raises(openai.APIConnectionError):
            pending.result(timeout=10.0)
    assert time.monotonic() - started < 5.0


def test_malformed_tool_call_arguments_are_not_json(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    server.inject("malformed_tool_call")

    completion = ask(client, conversation("write a haiku about supervision to haiku.txt"))

    call = (completion.choices[0].message.tool_calls or [])[0]
    assert "write_file" == call.function.name  # type: ignore[union-attr]
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_a_malformed_call_reported_back_is_tried_again_then_given_up(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    """The model reads the tool's error and tries the step again, twice, then says it failed."""
    server.inject("malformed_tool_call")
    messages = conversation("write a haiku about supervision to haiku.txt")
    first = ask(client, messages)
    call = (first.choices[0].message.tool_calls or [])[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append(
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": format_tool_error("MalformedToolCall", "arguments are not JSON"),
        }
    )

    retried = ask(client, messages)
    name, args, _ = only_call(retried)
    answer(messages, retried, format_tool_error("FileNotFound", "the disk is gone"))
    again = ask(client, messages)
    answer(messages, again, format_tool_error("FileNotFound", "the disk is still gone"))
    final = ask(client, messages)

    assert ("write_file", "/ws/haiku.txt") == (name, args["path"])
    assert "write_file" == only_call(again)[0]
    text = final.choices[0].message.content or ""
    assert final.choices[0].message.tool_calls is None
    assert "MalformedToolCall: arguments are not JSON" in text
    assert "the disk is still gone" in text
    assert "gave up" in text


def test_match_targets_only_matching_requests(server: ModelServer, client: openai.OpenAI) -> None:
    server.inject("500", count=2, match="alpha")

    beta = ask(client, conversation("write beta to beta.txt"))
    with pytest.raises(openai.InternalServerError):
        ask(client, conversation("write alpha to alpha.txt"))
    pending = _settled(server).pending_faults

    assert "write_file" == only_call(beta)[0]
    assert [("500", 1, "alpha")] == [(f.kind, f.count, f.match) for f in pending]


def test_faults_fire_in_queue_order_one_per_request(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    server.inject("401")
    server.inject("500", count=2)
    raised = []

    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as caught:
            ask(client, conversation("Explain supervision"))
        raised.append(caught.value.status_code)
    ask(client, conversation("Explain supervision"))

    assert [401, 500, 500] == raised
    assert {"401": 1, "500": 2} == _settled(server).faults_fired


def test_clear_faults_drops_pending_firings(server: ModelServer, client: openai.OpenAI) -> None:
    server.inject("500", count=3)

    cleared = server.clear_faults()
    completion = ask(client, conversation("Explain supervision"))

    assert 3 == cleared
    assert "stop" == completion.choices[0].finish_reason


def test_inject_rejects_an_unknown_kind(server: ModelServer) -> None:
    with pytest.raises(ValidationError, match="kind"):
        server.inject("504")


def test_fault_logs_name_the_kind_and_served_requests_are_logged(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    server.inject("500")
    with capture_logs() as logs:
        with pytest.raises(openai.InternalServerError):
            ask(client, conversation("Explain supervision"))
        ask(client, conversation("Explain supervision"))
        server.wait_idle(timeout=5.0)

    events = [e["event"] for e in logs]
    assert "fault_injected" in events
    assert "model_request_served" in events
    assert "500" == next(e for e in logs if e["event"] == "fault_injected")["kind"]


# --- the control API over HTTP --------------------------------------------------------------


def http(
    server: ModelServer, method: str, path: str, body: Any = None, *, key: str | None = None
) -> tuple[int, Any]:
    root = server.url.removesuffix("/v1")
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 - a local http URL of the test's server
        root + path,
        data=data,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_faults_can_be_queued_listed_and_cleared_over_http(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    queued = http(
        server,
        "POST",
        "/_control/faults",
        {
            "faults": [
                {"kind": 429, "count": 2, "retry_after": 0.5},
                {"kind": "hang", "seconds": 1, "match": "x"},
            ]
        },
    )
    with pytest.raises(openai.RateLimitError):
        ask(client, conversation("Explain supervision"))
    status, stats = http(server, "GET", "/_control/stats")
    cleared = http(server, "DELETE", "/_control/faults")
    completion = ask(client, conversation("Explain supervision"))

    assert (200, {"queued": 2}) == queued
    assert 200 == status
    assert [("429", 1), ("hang", 1)] == [(f["kind"], f["count"]) for f in stats["pending_faults"]]
    assert {"429": 1} == stats["faults_fired"]
    assert (200, {"cleared": 2}) == cleared
    assert "stop" == completion.choices[0].finish_reason


@pytest.mark.parametrize(
    "body",
    [
        {"faults": [{"kind": "teapot"}]},
        {"faults": [{"kind": "500", "count": 0}]},
        {"faults": [{"kind": "500", "colour": "red"}]},
        {"fault": []},
        b"{not json",
    ],
)
def test_invalid_fault_requests_are_rejected_with_the_reason(
    server: ModelServer,
    body: Any,
) -> None:
    status, payload = http(server, "POST", "/_control/faults", body)

    assert 400 == status
    assert "invalid_request_error" == payload["error"]["type"]
    assert [] == _settled(server).pending_faults


def test_stats_count_requests_served_and_log_each_one(
    server: ModelServer,
    client: openai.OpenAI,
) -> None:
    server.inject("500")
    with pytest.raises(openai.InternalServerError):
        ask(client, conversation("Explain supervision"))
    for _ in range(3):
        ask(client, conversation("write a haiku about stats to s.txt"))

    stats = _settled(server)

    assert (4, 3) == (stats.requests, stats.served)
    assert [500, 200, 200, 200] == [r.status for r in stats.request_log]
    assert ["500", None, None, None] == [r.fault for r in stats.request_log]
    assert all(r.at <= r.finished_at for r in stats.request_log)
    assert ["write_file"] * 3 == [r.tool for r in stats.request_log[1:]]


def test_bad_requests_get_openai_errors(server: ModelServer, client: openai.OpenAI) -> None:
    not_json = http(server, "POST", "/v1/chat/completions", b"{nope")
    no_messages = http(server, "POST", "/v1/chat/completions", {"model": "m", "messages": []})
    unknown = http(server, "GET", "/v2/whatever")
    with pytest.raises(openai.BadRequestError) as streaming:
        ask(client, conversation("Explain supervision"), stream=True)
    with pytest.raises(openai.BadRequestError) as broken_prompt:
        ask(client, [{"role": "user", "content": "UNDERSTUDY-EVALUATE\nInput (JSON):\n[1]"}])

    assert 400 == not_json[0]
    assert "not valid JSON" in not_json[1]["error"]["message"]
    assert 400 == no_messages[0]
    assert "messages" in no_messages[1]["error"]["message"]
    assert 404 == unknown[0]
    assert "unsupported_parameter" == streaming.value.code
    assert "invalid_prompt" == broken_prompt.value.code


# --- server options and lifecycle -----------------------------------------------------------


def test_an_api_key_is_required_when_configured() -> None:
    with ModelServer(api_key="sesame") as server:
        with (
            make_client(server, api_key="wrong") as wrong,
            pytest.raises(openai.AuthenticationError),
        ):
            ask(wrong, conversation("Explain supervision"))
        with make_client(server, api_key="sesame") as right:
            completion = ask(right, conversation("Explain supervision"))

    assert "stop" == completion.choices[0].finish_reason


def test_the_control_endpoints_require_the_api_key_when_one_is_configured() -> None:
    faults = {"faults": [{"kind": "500"}]}
    with ModelServer(api_key="sesame") as server:
        refused = [
            http(server, "POST", "/_control/faults", faults)[0],
            http(server, "POST", "/_control/faults", faults, key="wrong")[0],
            http(server, "GET", "/_control/stats")[0],
            http(server, "DELETE", "/_control/faults")[0],
        ]
        pending_after_refusals = server.stats().pending_faults
        queued = http(server, "POST", "/_control/faults", faults, key="sesame")
        stats_status, stats = http(server, "GET", "/_control/stats", key="sesame")

    assert [401, 401, 401, 401] == refused
    assert [] == pending_after_refusals
    assert (200, {"queued": 1}) == queued
    assert (200, ["500"]) == (stats_status, [f["kind"] for f in stats["pending_faults"]])


def test_a_prompt_beyond_the_context_window_is_rejected() -> None:
    with ModelServer(context_window=100) as server, make_client(server) as client:
        ask(client, [{"role": "user", "content": "Explain supervision"}], tools=None)
        with pytest.raises(openai.BadRequestError) as caught:
            ask(client, [{"role": "user", "content": "Explain supervision " * 40}], tools=None)

    assert "context_length_exceeded" == caught.value.code


def test_url_start_and_stop_follow_the_lifecycle() -> None:
    server = ModelServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url

    url = server.start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    server.stop()

    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def _settled(server: ModelServer) -> Any:
    """The server's stats once the requests in progress have been recorded (the client can
    see a response before the server has finished logging it)."""
    assert server.wait_idle(10)
    return server.stats()
