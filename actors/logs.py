"""structlog configuration for the command line (the library itself only emits events)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = [
    "SafePrintLogger",
    "SafePrintLoggerFactory",
    "configure_logging",
    "ensure_safe_logging",
]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SafePrintLogger(structlog.PrintLogger):
    """A PrintLogger that drops a line rather than raise when its stream is gone.

    Actor processes inherit the stream of the program that started them; when that program
    dies, writing raises BrokenPipeError, and a log line must never crash an actor.
    """

    def msg(self, message: str) -> None:
        """Write one line, ignoring a closed or broken stream."""
        try:
            super().msg(message)
        except (OSError, ValueError):
            pass

    log = debug = info = warn = warning = err = error = critical = exception = failure = fatal = msg


class SafePrintLoggerFactory:
    """Produce SafePrintLoggers writing to ``file``."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: object) -> SafePrintLogger:
        return SafePrintLogger(self._file)


def ensure_safe_logging() -> None:
    """In an actor's own process: if nobody configured structlog, log to stderr safely."""
    if not structlog.is_configured():
        configure_logging("info")


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Send structlog events at ``level`` and above to stderr, as text or JSON lines."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if json
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=SafePrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Thespian logs through the standard library; keep its chatter at warnings.
    logging.getLogger("Thespian").setLevel(logging.WARNING)
