"""The runtime: the seam (the only Thespian adapter), the Thespian workarounds, workers, flows,
supervisors, restart decisions, the guardian, the Runtime and the loading of ``start:`` strings.

May import: ``protocols``, ``actors.errors`` and ``actors.logs`` only; never the services, the
agents or the model server. Only ``seam`` and ``workarounds`` call Thespian's API.
"""

__all__: list[str] = []
