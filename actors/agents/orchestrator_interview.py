"""The orchestrator's interview, pure: a session, the verdict on each rating, the clarified goal.

The interview is the first phase of an interviewed run (``RunGoalRequest.interview``). Each
round the model rates the request and the clarifications so far
(``protocols.prompts.interview_prompt``); :func:`judge_rating` turns the rating into what the
orchestrator answers::

    not a task                              ChatReply (the model's reply); the session ends
    ambiguity > clarity_threshold, with     ClarifyingQuestions; the caller answers them with
      questions, fewer than max rounds        AnswerQuestions in the same session
    otherwise                               the run starts on the clarified goal (noted as
                                              ``forced`` when still ambiguous)

No Thespian and no I/O: the orchestrator owns the sessions and the model calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from protocols.orchestrator import RunGoalRequest
from protocols.prompts import InterviewRating

__all__ = [
    "COMPLEX_AT",
    "DEFAULT_CHAT_REPLY",
    "MAX_SESSIONS",
    "InterviewSession",
    "InterviewVerdict",
    "Sessions",
    "clarified_request",
    "judge_rating",
]

COMPLEX_AT: Final = 0.5
"""A rated complexity from which the specification is made by the model."""
MAX_SESSIONS: Final = 256
"""Open interview sessions kept; beyond, the oldest is forgotten."""
DEFAULT_CHAT_REPLY: Final = "That does not look like a task. What would you like me to do?"


@dataclass
class InterviewSession:
    """One interview: the request, the questions asked last, and every answer so far."""

    session_id: str
    request: RunGoalRequest
    clarifications: list[tuple[str, str]] = field(default_factory=list)
    questions: tuple[str, ...] = ()
    rounds: int = 0
    ratings: list[InterviewRating] = field(default_factory=list)

    def answer(self, answers: Sequence[str]) -> None:
        """Record the answers to the questions asked last.

        Raises:
            ValueError: no question is open, or the answers do not match the questions in
                number, or an answer is blank.
        """
        if not self.questions:
            msg = f"session {self.session_id!r} has no open question"
            raise ValueError(msg)
        if len(answers) != len(self.questions):
            msg = (
                f"session {self.session_id!r} asked {len(self.questions)} question(s), "
                f"got {len(answers)} answer(s)"
            )
            raise ValueError(msg)
        blank = [i + 1 for i, a in enumerate(answers) if not a.strip()]
        if blank:
            msg = f"answer {blank[0]} of session {self.session_id!r} is empty"
            raise ValueError(msg)
        self.clarifications += list(zip(self.questions, (a.strip() for a in answers), strict=True))
        self.questions = ()


@dataclass(frozen=True)
class InterviewVerdict:
    """What to answer after a rating: ``chat`` (``reply``), ``ask`` (``questions``) or
    ``run`` (``forced`` when the rounds ran out while the request was still ambiguous)."""

    action: Literal["chat", "ask", "run"]
    reply: str = ""
    questions: tuple[str, ...] = ()
    forced: bool = False


def judge_rating(session: InterviewSession, rating: InterviewRating) -> InterviewVerdict:
    """Decide what a rating means for ``session`` (and note the round in it)."""
    request = session.request
    session.ratings.append(rating)
    if not rating.is_task:
        return InterviewVerdict("chat", reply=rating.reply.strip() or DEFAULT_CHAT_REPLY)
    questions = tuple(q.strip() for q in rating.questions if q.strip())
    unclear = rating.ambiguity > request.clarity_threshold
    if unclear and questions and session.rounds < request.max_interview_rounds:
        session.rounds += 1
        session.questions = questions
        return InterviewVerdict("ask", questions=questions)
    return InterviewVerdict("run", forced=unclear)


def clarified_request(session: InterviewSession) -> tuple[RunGoalRequest, str]:
    """Return the request to run after the interview, and its original request text.

    Without clarifications the request runs as it came. With them, the goal is the model's
    restatement (``goal`` of the last rating) when it gave one, else the request followed by
    the answers; the original request text is the whole exchange, for the agent's prompt.
    """
    request = session.request
    if not session.clarifications:
        return request, request.goal
    restated = session.ratings[-1].goal.strip() if session.ratings else ""
    answers = "; ".join(answer for _question, answer in session.clarifications)
    goal = restated or f"{request.goal} ({answers})"
    exchange = "\n".join([request.goal, *(f"Q: {q}\nA: {a}" for q, a in session.clarifications)])
    return request.model_copy(update={"goal": goal}), exchange


class Sessions:
    """The open interview sessions, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        """Keep at most ``limit`` sessions."""
        self.limit = limit
        self._open: OrderedDict[str, InterviewSession] = OrderedDict()

    def add(self, session: InterviewSession) -> None:
        """Open a session (forgetting the oldest beyond the limit)."""
        self._open[session.session_id] = session
        while len(self._open) > self.limit:
            self._open.popitem(last=False)

    def get(self, session_id: str, owner: str) -> InterviewSession | None:
        """The open session ``session_id`` of ``owner`` (another owner's is unknown)."""
        session = self._open.get(session_id)
        if session is None or session.request.owner != owner:
            return None
        return session

    def close(self, session_id: str) -> None:
        """End a session (a chat reply or a started run)."""
        self._open.pop(session_id, None)

    def __len__(self) -> int:
        """The number of open sessions."""
        return len(self._open)
