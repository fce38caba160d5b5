"""The tree the orchestrator tests run: the system services, an agent pool and the
orchestrator, all pointed at one model endpoint."""

from __future__ import annotations

from typing import Any

from protocols.topology import ChildSpec, SupervisorSpec

ORCH = "root/orchestrator"
DECIDER = "actors.agents.model_guard:decide"


def orchestrator_tree(
    url: str,
    extra: list[ChildSpec] | None = None,
    *,
    decider: str | None = DECIDER,
    **orchestrator: Any,
) -> SupervisorSpec:
    """Services, a simple_one_for_one agent pool (agents restart by ``decider``) and the
    orchestrator (``orchestrator``: its extra args) on the model at ``url``; ``extra``
    children after them."""
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            SupervisorSpec(
                id="system",
                children=[
                    ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
                    ChildSpec(id="scheduler", start="actors.services.scheduler:Scheduler"),
                    ChildSpec(id="registry", start="actors.services.registry:Registry"),
                    ChildSpec(
                        id="runs",
                        start="actors.services.runs:RunManager",
                        args={"agents_supervisor": "root/agents"},
                    ),
                ],
            ),
            SupervisorSpec(
                id="agents",
                strategy="simple_one_for_one",
                intensity=10,
                template=ChildSpec(
                    id="agent",
                    start="actors.agents.agent:Agent",
                    restart="transient",
                    shutdown=1,
                    decider=decider,
                    args={"base_url": url, "api_key": "k"},
                ),
            ),
            ChildSpec(
                id="orchestrator",
                start="actors.agents.orchestrator:Orchestrator",
                args={"base_url": url, "api_key": "k", **orchestrator},
                roles=["admin"],  # it grants its agents their permissions
            ),
            *(extra or []),
        ],
    )
