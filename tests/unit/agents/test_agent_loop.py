"""The agent's loop without an actor: classifier, breaker, rate limiter, budgets, and the run's
state machine driven by a scripted fake model, a fake access manager and fake tools."""

from __future__ import annotations

import email.utils
import json
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from actors.agents.agent_loop import (
    AgentRun,
    Audit,
    CallModel,
    CheckTool,
    Effect,
    ExecuteTool,
    Finish,
    ModelTurn,
    Progress,
    RequestedToolCall,
    TokenAccount,
    Wait,
    turn_from_completion,
)
from actors.agents.agent_tools import ToolOutcome
from actors.agents.model_guard import (
    CircuitBreaker,
    CircuitOpen,
    MalformedToolCall,
    ModelFailure,
    RateLimiter,
    classify,
    decide,
    decide_isolated,
    parse_retry_after,
)
from protocols.access import COMMAND_PATH
from protocols.agent import AgentLimits, AgentResult, GoalSpec, RunGoal

URL = "http://model.test/v1/chat/completions"
# The HTTP library the installed openai builds its errors from (httpx, or httpx2 for openai 3):
# the errors are made from its Request and Response objects, as the client makes them.
_errors: Any = openai._exceptions
http: Any = getattr(_errors, "httpx2", None) or _errors.httpx
WS = "/srv/ws"

ECHO = shutil.which("echo", path=COMMAND_PATH)


# --- helpers --------------------------------------------------------------------------------


class Clock:
    """A manual monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def response(status: int, headers: dict[str, str] | None = None) -> Any:
    return http.Response(status, headers=headers or {}, request=http.Request("POST", URL))


def status_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str = "nope",
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    body = {"message": message, "type": "invalid_request_error", "code": None}
    return cls(f"Error code: {status}", response=response(status, headers), body=body)


def rate_limited(retry_after: str | None = "2") -> openai.RateLimitError:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    error = status_error(openai.RateLimitError, 429, "slow down", headers)
    assert isinstance(error, openai.RateLimitError)
    return error


def say(text: str, inp: int = 10, out: int = 5) -> ModelTurn:
    return ModelTurn(content=text, input_tokens=inp, output_tokens=out)


def call(*calls: tuple[str, dict[str, Any] | str], inp: int = 10, out: int = 5) -> ModelTurn:
    parsed = tuple(
        RequestedToolCall.parse(
            f"call_{i}", name, args if isinstance(args, str) else json.dumps(args)
        )
        for i, (name, args) in enumerate(calls)
    )
    return ModelTurn(content=None, tool_calls=parsed, input_tokens=inp, output_tokens=out)


def goal(text: str = "do it", **limits: Any) -> RunGoal:
    return RunGoal(
        run_id="r1", spec=GoalSpec(goal=text, workspace=WS), limits=AgentLimits(**limits)
    )


def grant(check: CheckTool) -> tuple[bool, str, str]:
    return True, f"{check.resource!r} matches '/srv/ws/**'", check.resource


def written(execute: ExecuteTool) -> ToolOutcome:
    if execute.tool == "write_file":
        return ToolOutcome(ok=True, output=f"wrote to {execute.target}", written=execute.target)
    return ToolOutcome(ok=True, output=f"ran {execute.tool}")


@dataclass
class FakeHost:
    """Carries out a run's effects the way the Agent does, with scripted answers."""

    run: AgentRun
    clock: Clock
    model: list[ModelTurn | BaseException]
    access: Callable[[CheckTool], tuple[bool, str, str]] = grant
    tools: Callable[[ExecuteTool], ToolOutcome] = written
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    effects: list[Effect] = field(default_factory=list)

    def go(self) -> Finish:
        pending: deque[Effect] = deque(self.run.start())
        while pending:
            effect = pending.popleft()
            self.effects.append(effect)
            match effect:
                case CallModel():
                    self.clock.advance(self.model_seconds)
                    answer = self.model.pop(0)
                    pending.extend(
                        self.run.model_failed(answer)
                        if isinstance(answer, BaseException)
                        else self.run.model_replied(answer)
                    )
                case CheckTool():
                    allowed, reason, resolved = self.access(effect)
                    pending.extend(
                        self.run.access_decided(allowed=allowed, reason=reason, resolved=resolved)
                    )
                case ExecuteTool():
                    self.clock.advance(self.tool_seconds)
                    pending.extend(self.run.tool_done(self.tools(effect)))
                case Wait():
                    self.clock.advance(effect.seconds)
                    pending.extend(self.run.resume())
        finish = self.effects[-1]
        assert isinstance(finish, Finish)
        return finish

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def host(
    script: list[ModelTurn | BaseException], limits: dict[str, Any] | None = None, **options: Any
) -> FakeHost:
    clock = Clock()
    breaker = options.pop("breaker", None) or CircuitBreaker(3, 5.0, clock=clock)
    run_options = {k: options.pop(k) for k in ("model_retries", "retry_backoff") if k in options}
    run = AgentRun(
        goal(**(limits or {})), agent="coder", breaker=breaker, clock=clock, **run_options
    )
    return FakeHost(run, clock, list(script), **options)


# --- classify and decide --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rate_limited("2"), "retryable"),
        (status_error(openai.InternalServerError, 500), "retryable"),
        (status_error(openai.InternalServerError, 503), "retryable"),
        (status_error(openai.ConflictError, 409), "retryable"),
        (status_error(openai.APIStatusError, 408), "retryable"),
        (openai.APITimeoutError(request=http.Request("POST", URL)), "retryable"),
        (openai.APIConnectionError(request=http.Request("POST", URL)), "retryable"),
        (status_error(openai.AuthenticationError, 401), "fatal"),
        (status_error(openai.PermissionDeniedError, 403), "fatal"),
        (status_error(openai.BadRequestError, 400, "maximum context length is 10 tokens"), "fatal"),
        (status_error(openai.NotFoundError, 404), "fatal"),
        (status_error(openai.UnprocessableEntityError, 422), "fatal"),
        (status_error(openai.APIStatusError, 418), "fatal"),
        (MalformedToolCall("write_file: arguments are not JSON"), "fatal"),
        (CircuitOpen(1.5), "retryable"),
        (ValueError("the model's response has no choices"), "unknown"),
        (openai.APIResponseValidationError(response(200), None), "unknown"),
        (status_error(openai.APIStatusError, 302), "unknown"),
    ],
)
def test_model_errors_are_classified_by_type_and_status(exc: Exception, expected: str) -> None:
    assert expected == classify(exc).error_class


def test_a_rate_limit_keeps_its_retry_after_and_the_servers_message() -> None:
    failure = classify(rate_limited("2.5"))

    assert ModelFailure("retryable", "RateLimitError", "HTTP 429: slow down", 2.5) == failure
    assert "RateLimitError: HTTP 429: slow down; retry_after=2.5" == failure.error()
    assert (
        "error:retryable:RateLimitError: HTTP 429: slow down; retry_after=2.5"
        == failure.exit_reason()
    )


def test_a_circuit_open_failure_waits_for_the_breaker() -> None:
    assert 1.5 == classify(CircuitOpen(1.5)).retry_after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_seconds_or_milliseconds(
    headers: dict[str, str], expected: float | None
) -> None:
    assert expected == parse_retry_after(http.Headers(headers))


def test_retry_after_may_be_an_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)

    assert 30.0 == parse_retry_after(http.Headers({"retry-after": date}), now)
    assert parse_retry_after(None) is None


def test_the_exit_reason_of_each_class_follows_the_protocol() -> None:
    fatal = classify(status_error(openai.AuthenticationError, 401, "Incorrect API key"))
    unknown = classify(KeyError("choices"))

    assert "error:fatal:AuthenticationError: HTTP 401: Incorrect API key" == fatal.exit_reason()
    assert "error:KeyError: 'choices'" == unknown.exit_reason()


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("error:retryable:RateLimitError: HTTP 429: slow; retry_after=2.5", ("restart", 2.5)),
        ("error:retryable:InternalServerError: HTTP 500: oops", ("restart", 0.0)),
        ("error:retryable:X: y; retry_after=nan", ("restart", 0.0)),
        ("error:retryable:X: y; retry_after=1e-07", ("restart", 1e-07)),
        ("error:fatal:AuthenticationError: HTTP 401: no", ("stop", 0.0)),
        ("error:ValueError: no choices", ("escalate", 0.0)),
        ("killed", ("restart", 0.0)),
        ("budget", ("escalate", 0.0)),
    ],
)
def test_decide_restarts_retryable_stops_fatal_and_escalates_the_rest(
    reason: str, expected: tuple[str, float]
) -> None:
    assert expected == decide(reason)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("error:retryable:RateLimitError: HTTP 429: slow; retry_after=2.5", ("restart", 2.5)),
        ("error:fatal:AuthenticationError: HTTP 401: no", ("stop", 0.0)),
        ("error:ValueError: no choices", ("restart", 0.0)),
        ("killed", ("restart", 0.0)),
        ("budget", ("restart", 0.0)),
    ],
)
def test_decide_isolated_restarts_what_decide_would_escalate(
    reason: str, expected: tuple[str, float]
) -> None:
    assert expected == decide_isolated(reason)


def test_long_messages_are_cut_to_one_line() -> None:
    failure = classify(ValueError("line one\nline two " + "x" * 1000))

    assert "\n" not in failure.message
    assert 300 == len(failure.message)


# --- the circuit breaker --------------------------------------------------------------------


def test_the_breaker_opens_after_n_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 5.0, clock=clock)

    breaker.record_failure()
    breaker.record_failure()
    before = (breaker.state, breaker.allow())
    breaker.record_failure()

    assert ("closed", True) == before
    assert "open" == breaker.state
    assert not breaker.allow()
    assert 5.0 == breaker.retry_in()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(2, 5.0, clock=Clock())

    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()

    assert "closed" == breaker.state


def test_after_the_cooldown_exactly_one_trial_passes_and_its_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()

    clock.advance(4.9)
    early = breaker.allow()
    clock.advance(0.1)
    state = breaker.state
    first, second = breaker.allow(), breaker.allow()
    breaker.record_success()

    assert not early
    assert "half_open" == state
    assert (True, False) == (first, second)
    assert "closed" == breaker.state
    assert breaker.allow()


def test_a_failed_trial_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()

    clock.advance(1.0)
    breaker.record_failure()

    assert "open" == breaker.state
    assert 5.0 == breaker.retry_in()
    assert not breaker.allow()


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1.0), (1, -1.0), (1, float("nan"))])
def test_the_breaker_rejects_bad_settings(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(failures, cooldown)


# --- rate limiter and token account ---------------------------------------------------------


def test_the_rate_limiter_spaces_calls_by_the_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(4.0, clock=clock)

    first = limiter.try_acquire()
    wait = limiter.try_acquire()
    clock.advance(wait)
    second = limiter.try_acquire()

    assert 0.0 == first
    assert 0.25 == wait
    assert 0.0 == second
    assert 0.25 == limiter.try_acquire()


def test_no_rate_means_no_waiting() -> None:
    limiter = RateLimiter(None, clock=Clock())

    assert [0.0] * 5 == [limiter.try_acquire() for _ in range(5)]


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_the_rate_limiter_rejects_non_positive_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        RateLimiter(rate)


def test_the_token_account_counts_and_compares_with_the_budget() -> None:
    account = TokenAccount(budget=100)

    account.add(60, 40)
    at_budget = (account.exceeded(), account.exhausted())
    account.add(1, -5)

    assert (False, True) == at_budget
    assert account.exceeded()
    assert (61, 40) == (account.usage().input_tokens, account.usage().output_tokens)
    assert "token budget exceeded: used 101 of 100 tokens" == account.describe()
    assert not TokenAccount(budget=None).exhausted()


# --- reading a completion -------------------------------------------------------------------


def test_a_completion_becomes_a_turn_and_malformed_arguments_are_kept() -> None:
    completion = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "a",
                                "type": "function",
                                "function": {"name": "read_file", "arguments": '{"path": "x"}'},
                            },
                            {
                                "id": "b",
                                "type": "function",
                                "function": {
                                    "name": "write_file",
                                    "arguments": '{"path": "x", "con',
                                },
                            },
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }
    )

    turn = turn_from_completion(completion)

    assert (12, 7) == (turn.input_tokens, turn.output_tokens)
    assert {"path": "x"} == turn.tool_calls[0].arguments
    assert turn.tool_calls[1].arguments is None
    assert "not JSON" in (turn.tool_calls[1].problem or "")
    assert (
        '{"path": "x", "con' == turn.assistant_message()["tool_calls"][1]["function"]["arguments"]
    )


def test_a_completion_without_choices_is_an_error() -> None:
    completion = openai.types.chat.ChatCompletion.model_validate(
        {"id": "c1", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    )

    with pytest.raises(ValueError, match="no choices"):
        turn_from_completion(completion)


def test_arguments_that_are_not_an_object_are_malformed() -> None:
    assert RequestedToolCall.parse("a", "read_file", "[1, 2]").arguments is None
    assert {} == RequestedToolCall.parse("a", "list_directory", "").arguments


# --- the run --------------------------------------------------------------------------------


def _run_for(text: str, script: list[ModelTurn | BaseException]) -> FakeHost:
    clock = Clock()
    run = AgentRun(
        goal(text), agent="coder", breaker=CircuitBreaker(3, 5.0, clock=clock), clock=clock
    )
    return FakeHost(run, clock, list(script))


def test_a_final_answer_without_the_file_the_goal_asks_for_fails() -> None:
    fake = _run_for("write a haiku about rain to rain.txt", [say("I wrote a lovely haiku.")])

    result = fake.go().result

    assert not result.success
    assert "the goal asks for rain.txt but the agent wrote no file" == result.error
    assert result.error_class is None
    assert "I wrote a lovely haiku." == result.output


def test_a_final_answer_after_writing_the_asked_file_succeeds() -> None:
    fake = _run_for(
        "write a haiku about rain to rain.txt",
        [call(("write_file", {"path": "rain.txt", "content": "a\nb\nc\n"})), say("done")],
    )

    assert fake.go().result.success


def test_a_refusal_fails_the_run_with_the_models_reason() -> None:
    refusal = "I cannot do this goal: it is outside what I can write."
    fake = _run_for("explain the universe", [ModelTurn(content=refusal, refusal=refusal)])

    result = fake.go().result

    assert not result.success
    assert f"the model refused: {refusal}" == result.error
    assert result.error_class is None


def test_a_refusal_is_read_from_the_completion() -> None:
    completion = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "no", "refusal": "no, sorry"},
                }
            ],
        }
    )

    assert "no, sorry" == turn_from_completion(completion).refusal


def test_a_final_answer_ends_the_run_successfully() -> None:
    fake = host([say("all done", inp=30, out=4)])

    result = fake.go().result

    assert (
        AgentResult(
            run_id="r1",
            agent="coder",
            success=True,
            output="all done",
            usage={"input_tokens": 30, "output_tokens": 4},
        )
        == result
    )
    call_model = fake.of(CallModel)[0]
    assert "Goal: do it" in call_model.messages[0]["content"]
    assert ["read_file", "write_file", "list_directory"] == [
        t["function"]["name"] for t in call_model.tools
    ]


def test_a_granted_tool_call_runs_on_the_resolved_path_and_is_recorded_and_audited() -> None:
    fake = host(
        [call(("write_file", {"path": "notes/a.txt", "content": "hi"})), say("ok")],
        access=lambda c: (True, "matches", "/real/srv/ws/notes/a.txt"),
    )
    fake.tool_seconds = 0.5

    finish = fake.go()

    check = fake.of(CheckTool)[0]
    assert CheckTool("write_file", "write", "/srv/ws/notes/a.txt") == check
    assert "/real/srv/ws/notes/a.txt" == fake.of(ExecuteTool)[0].target
    assert ["/real/srv/ws/notes/a.txt"] == finish.result.files
    step = finish.result.steps[0]
    assert ("write_file", False, 0.5) == (step.name, step.error, step.duration)
    assert {"path": "notes/a.txt", "content": "hi"} == step.arguments
    audit = fake.of(Audit)[0]
    assert "tool.write_file" == audit.action
    assert {
        "run_id": "r1",
        "tool": "write_file",
        "allowed": True,
        "reason": "matches",
        "error": False,
    } == {k: audit.detail[k] for k in ("run_id", "tool", "allowed", "reason", "error")}
    second_call = fake.of(CallModel)[1]
    assert {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": "wrote to /real/srv/ws/notes/a.txt",
    } == second_call.messages[-1]
    assert "assistant" == second_call.messages[-2]["role"]


def test_a_denied_tool_call_never_runs_and_the_model_reads_the_reason() -> None:
    fake = host(
        [call(("read_file", {"path": "/etc/shadow"})), say("could not")],
        access=lambda c: (False, "'/etc/shadow' matches no allowed path", "/etc/shadow"),
    )

    finish = fake.go()

    assert [] == fake.of(ExecuteTool)
    assert finish.result.success
    assert finish.result.steps[0].error
    assert (
        "ERROR AccessDenied: '/etc/shadow' matches no allowed path"
        == fake.of(CallModel)[1].messages[-1]["content"]
    )
    assert [
        "model_call_started",
        "model_call",
        "tool_call_started",
        "tool_denied",
        "model_call_started",
        "model_call",
        "finished",
    ] == [p.what for p in fake.of(Progress)]
    assert fake.of(Audit)[0].detail["allowed"] is False


@pytest.mark.parametrize(
    ("turn", "error"),
    [
        (call(("run_command", {"argv": ["ls"]})), "ERROR ToolNotAvailable:"),
        (call(("delete_everything", {})), "ERROR UnknownTool:"),
        (call(("write_file", {"path": "a.txt"})), "ERROR InvalidArguments: write_file needs"),
        (call(("read_file", {"path": "a\x00b"})), "ERROR InvalidArguments:"),
        (call(("read_file", "{not json")), "ERROR MalformedToolCall: read_file: arguments are"),
    ],
)
def test_calls_that_cannot_run_are_answered_with_an_error_and_never_checked(
    turn: ModelTurn, error: str
) -> None:
    fake = host([turn, say("sorry")])

    finish = fake.go()

    assert [] == fake.of(CheckTool)
    assert finish.result.success
    assert finish.result.steps[0].error
    assert fake.of(CallModel)[1].messages[-1]["content"].startswith(error)
    assert fake.of(Audit)[0].detail["allowed"] is None


def test_run_command_is_offered_and_checked_as_execute_when_commands_are_allowed() -> None:
    fake = host(
        [call(("run_command", {"argv": ["echo", "hi"]})), say("ran")],
        limits={"allow_commands": True},
    )

    fake.go()

    assert "run_command" in [t["function"]["name"] for t in fake.of(CallModel)[0].tools]
    assert CheckTool("run_command", "execute", ECHO) == fake.of(CheckTool)[0]
    assert ECHO == fake.of(ExecuteTool)[0].target


def test_a_second_malformed_tool_call_is_fatal() -> None:
    fake = host([call(("write_file", "{")), call(("write_file", '{"pa'))], model_retries=3)

    finish = fake.go()

    assert not finish.result.success
    assert "fatal" == finish.result.error_class
    assert finish.exit_reason is not None
    assert finish.exit_reason.startswith("error:fatal:MalformedToolCall: write_file: ")
    assert 2 == len(fake.of(CallModel))


def test_a_response_past_the_token_budget_stops_the_run_before_its_tools() -> None:
    fake = host(
        [call(("write_file", {"path": "a", "content": "b"}), inp=80, out=30)],
        limits={"token_budget": 100},
    )

    finish = fake.go()

    assert not finish.result.success
    assert "token budget exceeded: used 110 of 100 tokens" == finish.result.error
    assert finish.result.error_class is None
    assert finish.exit_reason is None
    assert [] == fake.of(CheckTool)


def test_a_budget_used_up_exactly_stops_before_the_next_call() -> None:
    fake = host(
        [call(("list_directory", {}), inp=90, out=10), say("never")], limits={"token_budget": 100}
    )

    finish = fake.go()

    assert 1 == len(fake.of(CallModel))
    assert "token budget exceeded: used 100 of 100 tokens" == finish.result.error
    assert 1 == len(finish.result.steps)


def test_max_steps_counts_model_turns() -> None:
    fake = host([call(("list_directory", {}))] * 3, limits={"max_steps": 3})

    finish = fake.go()

    assert 3 == len(fake.of(CallModel))
    assert "max steps exceeded: 3 model turns without a final answer" == finish.result.error
    assert 3 == len(finish.result.steps)


def test_the_execution_time_is_checked_between_steps() -> None:
    fake = host(
        [call(("list_directory", {}), ("read_file", {"path": "a"})), say("x")],
        limits={"max_execution_time": 2.0},
    )
    fake.tool_seconds = 2.5

    finish = fake.go()

    assert 1 == len(fake.of(ExecuteTool))
    assert finish.result.error is not None
    assert finish.result.error.startswith("max execution time exceeded: ran 2.50s")
    assert finish.exit_reason is None


def test_expire_ends_a_run_waiting_for_the_access_manager_and_late_answers_are_ignored() -> None:
    clock = Clock()
    run = AgentRun(goal(), agent="coder", breaker=CircuitBreaker(clock=clock), clock=clock)
    run.start()
    effects = run.model_replied(call(("list_directory", {})))
    assert isinstance(effects[-1], CheckTool)

    clock.advance(200)
    ended = run.expire()

    assert isinstance(ended[-1], Finish)
    assert not ended[-1].result.success
    assert [] == run.access_decided(allowed=True, reason="late", resolved=WS)
    assert [] == run.expire()
    assert [] == run.model_replied(say("late"))
    assert [] == run.resume()


def test_each_model_and_tool_call_is_announced_before_it_runs_and_reported_after() -> None:
    fake = host([call(("write_file", {"path": "a.txt", "content": "x"})), say("done")])

    fake.go()

    progress = fake.of(Progress)
    assert [
        "model_call_started",
        "model_call",
        "tool_call_started",
        "tool_call",
        "model_call_started",
        "model_call",
        "finished",
    ] == [p.what for p in progress]
    assert [1, 1, 2, 2] == [p.detail["call"] for p in progress if "model" in p.what]
    assert "write_file" == progress[2].detail["name"] == progress[3].detail["name"]
    ended = [p for p in progress if p.what == "model_call"]
    assert all(p.detail["input_tokens"] > 0 for p in ended)
    assert (
        sum(p.detail["input_tokens"] + p.detail["output_tokens"] for p in ended)
        == ended[-1].detail["total_tokens"]
    )


def test_inputs_out_of_phase_have_no_effect() -> None:
    clock = Clock()
    run = AgentRun(goal(), agent="coder", breaker=CircuitBreaker(clock=clock), clock=clock)

    assert [] == run.model_replied(say("too early"))
    assert [] == run.tool_done(ToolOutcome(ok=True, output=""))
    assert [] == run.expire()
    assert isinstance(run.start()[-1], CallModel)
    assert [] == run.start()
    assert [] == run.access_decided(allowed=True, reason="", resolved="")


def test_abort_fails_the_run_without_an_exit_reason() -> None:
    clock = Clock()
    run = AgentRun(goal(), agent="coder", breaker=CircuitBreaker(clock=clock), clock=clock)
    run.start()

    finish = run.abort("shutdown")[-1]

    assert isinstance(finish, Finish)
    assert "the agent stopped (shutdown) before the run finished" == finish.result.error
    assert finish.exit_reason is None
    assert [] == run.abort("again")


def test_two_429s_are_retried_in_place_after_retry_after() -> None:
    fake = host([rate_limited("2"), rate_limited("0.01"), say("done")], model_retries=2)

    finish = fake.go()

    assert finish.result.success
    assert [Wait(2.0, "retry"), Wait(0.2, "retry")] == fake.of(Wait)
    assert finish.exit_reason is None


def test_when_in_place_retries_run_out_the_run_fails_and_the_agent_exits_retryable() -> None:
    fake = host([rate_limited("1"), rate_limited("3")], model_retries=1)

    finish = fake.go()

    assert "retryable" == finish.result.error_class
    assert (
        "error:retryable:RateLimitError: HTTP 429: slow down; retry_after=3.0" == finish.exit_reason
    )
    assert 1 == len(fake.of(Wait))


def test_a_fatal_error_is_never_retried_in_place() -> None:
    fake = host([status_error(openai.AuthenticationError, 401)], model_retries=5)

    finish = fake.go()

    assert [] == fake.of(Wait)
    assert "fatal" == finish.result.error_class
    assert "error:fatal:AuthenticationError: HTTP 401: nope" == finish.exit_reason


def test_an_unknown_error_exits_with_its_type() -> None:
    fake = host([ValueError("no choices")], model_retries=5)

    finish = fake.go()

    assert "unknown" == finish.result.error_class
    assert "error:ValueError: no choices" == finish.exit_reason


def test_a_retry_that_would_pass_the_deadline_is_not_waited_for() -> None:
    fake = host([rate_limited("500")], limits={"max_execution_time": 60}, model_retries=3)

    finish = fake.go()

    assert [] == fake.of(Wait)
    assert "retryable" == finish.result.error_class


def test_an_open_breaker_makes_retries_wait_for_its_cooldown() -> None:
    clock = Clock()
    script: list[ModelTurn | BaseException] = [
        status_error(openai.InternalServerError, 500),
        status_error(openai.InternalServerError, 500),
        say("done"),
    ]
    run = AgentRun(
        goal(),
        agent="coder",
        breaker=CircuitBreaker(2, 7.0, clock=clock),
        clock=clock,
        model_retries=2,
    )
    fake = FakeHost(run, clock, script)

    finish = fake.go()

    assert [Wait(0.1, "retry"), Wait(7.0, "retry")] == fake.of(Wait)
    assert finish.result.success
    assert "closed" == run.breaker.state


def test_a_run_that_starts_with_the_breaker_open_fails_fast_as_retryable() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()
    run = AgentRun(goal(), agent="coder", breaker=breaker, clock=clock)

    effects = run.start()

    finish = effects[-1]
    assert isinstance(finish, Finish)
    assert not any(isinstance(e, CallModel) for e in effects)
    assert finish.exit_reason is not None
    assert finish.exit_reason.startswith("error:retryable:CircuitOpen: ")
    assert finish.exit_reason.endswith("; retry_after=5.0")


def test_an_early_resume_waits_for_the_rest() -> None:
    clock = Clock()
    run = AgentRun(
        goal(), agent="coder", breaker=CircuitBreaker(clock=clock), clock=clock, model_retries=1
    )
    run.start()
    assert Wait(2.0, "retry") == run.model_failed(rate_limited("2"))[-1]

    clock.advance(1.5)
    rest = run.resume()
    clock.advance(0.5)
    again = run.resume()

    assert [Wait(0.5, "retry")] == rest
    assert isinstance(again[-1], CallModel)


def test_tool_calls_are_spaced_by_the_rate_limit() -> None:
    fake = host(
        [call(*[("list_directory", {})] * 3), say("listed")], limits={"tool_calls_per_second": 2.0}
    )

    finish = fake.go()

    assert [Wait(0.5, "rate_limit"), Wait(0.5, "rate_limit")] == fake.of(Wait)
    assert 3 == len(finish.result.steps)
    assert 3 == len(fake.of(CheckTool))
