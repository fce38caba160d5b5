"""Extra workers for the supervision matrix tests; module level so TCP actor processes import
them."""

from __future__ import annotations

from pathlib import Path

from protocols import Message
from tests.integration._workers import Echo


class Tally(Echo):
    """An Echo that journals every message it is handed before handling it.

    The journal line is written before ``handle`` runs, so a handler that is run twice for one
    message (e.g. retried after it raised) leaves two lines.
    """

    def handle(self, message: Message) -> Message | None:
        self._journal(f"handle:{message.kind}")
        return super().handle(message)


class FlakyStart(Echo):
    """An Echo whose starts fail ``fail_starts`` times after the first successful one.

    Every start attempt appends a line to the ``attempts`` file; attempt 0 succeeds, attempts
    1..fail_starts raise, later attempts succeed again.
    """

    def on_start(self) -> None:
        attempts = Path(str(self.args["attempts"]))
        n = len(attempts.read_text().splitlines()) if attempts.exists() else 0
        with attempts.open("a") as fh:
            fh.write(f"attempt {n}\n")
        if 1 <= n <= int(self.args.get("fail_starts", 0)):
            self.seen = 0
            raise RuntimeError(f"flaky start {n}")
        super().on_start()
