"""Fault-injection experiments: an experiment file's faults scheduled against a running tree,
its workload driven, its steady state probed and its invariants checked, with reports to read.

May import: protocols, actors.core (the Runtime), actors.model (model faults), actors.errors
and actors.logs; nothing imports this package but the command line.
"""

__all__: list[str] = []
