"""Several hosts, one tree: joining, placement, the failure detector, remote exits.

Thespian's convention is the distributed engine (a leader, members that join it, actors
created on a member by capability); this package adds what it lacks: a failure detector of
Understudy's own over the authenticated transport, and the host agents it talks to.
"""

__all__: list[str] = []
