"""Properties of the agent's loop: the breaker against a reference model, the rate limiter's
spacing, token accounting and limits over random conversations, retries over random errors,
and exit reasons that the decider reads back exactly."""

from __future__ import annotations

import itertools
from typing import Any

import openai
from hypothesis import given
from hypothesis import strategies as st

from actors.agents.agent_loop import (
    AgentRun,
    Audit,
    CallModel,
    ModelTurn,
    Wait,
)
from actors.agents.model_guard import (
    CircuitBreaker,
    ModelFailure,
    RateLimiter,
    decide,
)
from tests.unit.agents.test_agent_loop import (
    Clock,
    FakeHost,
    call,
    goal,
    rate_limited,
    say,
    status_error,
)

# --- the breaker against a reference model --------------------------------------------------

breaker_ops = st.lists(
    st.one_of(
        st.just(("fail",)),
        st.just(("ok",)),
        st.just(("allow",)),
        st.tuples(st.just("advance"), st.floats(0, 10, allow_nan=False)),
    ),
    max_size=60,
)


@given(st.integers(1, 5), st.floats(0, 8, allow_nan=False), breaker_ops)
def test_the_breaker_behaves_like_the_reference_model(
    failures: int, cooldown: float, ops: list[tuple[Any, ...]]
) -> None:
    clock = Clock(0.0)
    breaker = CircuitBreaker(failures, cooldown, clock=clock)
    consecutive, opened_at, trial = 0, None, False  # the reference model
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "ok":
            breaker.record_success()
            consecutive, opened_at, trial = 0, None, False
        elif op[0] == "fail":
            breaker.record_failure()
            consecutive += 1
            if opened_at is not None or consecutive >= failures:
                opened_at, trial = clock.now, False
        else:
            expected = opened_at is None or (not trial and clock.now - opened_at >= cooldown)
            if opened_at is not None and expected:
                trial = True

            assert expected == breaker.allow()
        state = (
            "closed"
            if opened_at is None
            else "half_open"
            if trial or clock.now - opened_at >= cooldown
            else "open"
        )

        assert state == breaker.state


# --- the rate limiter -----------------------------------------------------------------------


@given(
    st.floats(0.1, 100, allow_nan=False),
    st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=40),
)
def test_granted_calls_are_never_closer_than_the_interval_and_waits_are_exact(
    rate: float, gaps: list[float]
) -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(rate, clock=clock)
    granted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        wait = limiter.try_acquire()
        if wait > 0:
            clock.advance(wait)

            assert 0.0 == limiter.try_acquire()
        granted.append(clock.now)

    assert all(b - a >= 1 / rate - 1e-6 for a, b in itertools.pairwise(granted))


# --- conversations --------------------------------------------------------------------------

tool_call = st.sampled_from(
    [
        ("list_directory", {}),
        ("read_file", {"path": "a.txt"}),
        ("write_file", {"path": "b.txt", "content": "x"}),
    ]
)
turns = st.lists(
    st.tuples(
        st.lists(tool_call, min_size=1, max_size=3), st.integers(0, 400), st.integers(0, 100)
    ),
    max_size=8,
)


@given(
    turns,
    st.integers(0, 400),
    st.integers(0, 100),
    st.one_of(st.none(), st.integers(1, 3000)),
    st.integers(1, 10),
)
def test_tokens_steps_and_limits_add_up_over_any_conversation(
    script: list[tuple[list[tuple[str, dict[str, Any]]], int, int]],
    final_in: int,
    final_out: int,
    budget: int | None,
    max_steps: int,
) -> None:
    turns_: list[ModelTurn | BaseException] = [call(*calls, inp=i, out=o) for calls, i, o in script]
    turns_.append(say("done", inp=final_in, out=final_out))
    clock = Clock()
    run = AgentRun(
        goal(token_budget=budget, max_steps=max_steps),
        agent="a",
        breaker=CircuitBreaker(clock=clock),
        clock=clock,
    )
    fake = FakeHost(run, clock, list(turns_))

    finish = fake.go()

    result = finish.result
    made = len(fake.of(CallModel))
    used = [(t.input_tokens, t.output_tokens) for t in turns_[:made] if isinstance(t, ModelTurn)]
    assert (sum(i for i, _ in used), sum(o for _, o in used)) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )
    assert made <= max_steps
    assert len(result.steps) == len(fake.of(Audit))
    assert finish.exit_reason is None
    if result.success:
        assert made == len(turns_)
        assert budget is None or result.usage.total <= budget
        assert sum(len(c) for c, _, _ in script) == len(result.steps)
    else:
        assert result.error is not None
        assert result.error.startswith(("token budget exceeded", "max steps exceeded"))


# --- model errors and retries ---------------------------------------------------------------

model_error = st.one_of(
    st.floats(0, 30, allow_nan=False).map(lambda s: rate_limited(repr(s))),
    st.just(status_error(openai.InternalServerError, 502)),
    st.just(status_error(openai.AuthenticationError, 401)),
    st.just(status_error(openai.BadRequestError, 400)),
    st.just(ValueError("odd response")),
)
CLASS_OF = {
    "RateLimitError": "retryable",
    "InternalServerError": "retryable",
    "AuthenticationError": "fatal",
    "BadRequestError": "fatal",
    "ValueError": "unknown",
}
DIRECTIVE = {"retryable": "restart", "fatal": "stop", "unknown": "escalate"}


@given(st.lists(model_error, max_size=5), st.integers(0, 4))
def test_retries_wait_at_least_retry_after_and_failures_exit_with_their_class(
    errors: list[Exception], retries: int
) -> None:
    clock = Clock()
    run = AgentRun(
        goal(max_execution_time=1000),
        agent="a",
        breaker=CircuitBreaker(10, 1.0, clock=clock),
        clock=clock,
        model_retries=retries,
    )
    fake = FakeHost(run, clock, [*errors, say("done")])

    finish = fake.go()

    first_bad = next(
        (i for i, e in enumerate(errors) if CLASS_OF[type(e).__name__] != "retryable"), None
    )
    retryable_run = len(errors) if first_bad is None else first_bad
    succeeded = first_bad is None and len(errors) <= retries
    assert succeeded == finish.result.success
    for wait, error in zip(fake.of(Wait), errors, strict=False):
        if isinstance(error, openai.RateLimitError):
            assert wait.seconds >= float(error.response.headers["retry-after"])
    if not succeeded:
        error_class = CLASS_OF[type(errors[min(retryable_run, retries)]).__name__]
        assert finish.exit_reason is not None
        assert error_class == finish.result.error_class
        assert DIRECTIVE[error_class] == decide(finish.exit_reason)[0]


@given(
    st.text(max_size=200),
    st.text(min_size=1, max_size=40).filter(str.isidentifier),
    st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    st.sampled_from(["retryable", "fatal", "unknown"]),
)
def test_the_decider_reads_back_every_exit_reason_exactly(
    message: str,
    type_name: str,
    retry_after: float | None,
    error_class: Any,
) -> None:
    from actors.agents.model_guard import _one_line

    failure = ModelFailure(error_class, type_name, _one_line(message), retry_after)

    directive, delay = decide(failure.exit_reason())

    assert DIRECTIVE[error_class] == directive
    expected = (retry_after or 0.0) if error_class == "retryable" else 0.0
    assert expected == delay
