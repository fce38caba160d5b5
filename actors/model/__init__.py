"""The embedded OpenAI-compatible model server: its HTTP server, its deterministic brain, its
wire formats and its fault queue.

May import: ``protocols`` (the prompt contract) and ``actors.logs`` only; never the core, the
services or the agents, so it runs on its own (``understudy model-server``).
"""

__all__: list[str] = []
