"""The agent layer: the agent actor and its pure run loop, its tools, the model guards (error
classes, circuit breaker, rate limiter) and the orchestrator that runs goals through phases.

May import: ``actors.core``, ``protocols``, ``actors.errors`` and ``actors.logs``; never the
services (it talks to them through their protocols) or the model server.
"""

__all__: list[str] = []
