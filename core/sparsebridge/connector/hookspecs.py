"""Hook specifications of the ``sparsebridge`` plugin system (pluggy project name ``sparsebridge``)."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("sparsebridge")
hookimpl = pluggy.HookimplMarker("sparsebridge")


@hookspec
def register_connectors(register: Callable[[type], None]) -> None:
    """Register connector classes by calling ``register(ConnectorSubclass)`` once per class.

    Each class subclasses :class:`sparsebridge.connector.Connector` and has a unique ``name``.
    """
