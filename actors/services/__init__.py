"""The system services, each a supervised worker on the core: the access manager (with its
policy and audit log), the scheduler (tasks, journal), the A2A registry and the run manager.

May import: ``actors.core``, ``protocols``, ``actors.errors`` and ``actors.logs``. A service
imports only its own role's parts (``<role>_<part>.py``) and role-less plumbing (``_sqlite``),
never another service: they talk through messages.
"""

__all__: list[str] = []
