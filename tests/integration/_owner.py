"""A program that starts a runtime, prints the pids of its actor processes, and waits forever."""

from __future__ import annotations

import sys
import threading

from actors import Runtime
from actors.logs import configure_logging
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology


def main() -> None:
    topology = Topology(
        system=SystemConfig(base="multiprocTCPBase", state_dir=sys.argv[1]),
        root=SupervisorSpec(
            id="root",
            children=[
                ChildSpec(
                    id="echo",
                    start="tests.integration._workers:Echo",
                    args={"journal": sys.argv[2]},
                ),
                SupervisorSpec(
                    id="sub", children=[ChildSpec(id="e2", start="tests.integration._workers:Echo")]
                ),
            ],
        ),
    )
    configure_logging("warning")
    rt = Runtime.start(topology)
    pids = [c.pid for c in rt.which_children("root")] + [
        c.pid for c in rt.which_children("root/sub")
    ]
    print(" ".join(str(p) for p in pids), flush=True)  # noqa: T201 - the test reads this line
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
