"""sparsebridge's Qdrant connector, registered as a plugin under the name ``qdrant``.

Installed with ``pip install 'sparsebridge[qdrant]'`` (qdrant-client and qdrant-edge-py); found by the
core through the ``sparsebridge`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from sparsebridge.connector.hookspecs import hookimpl

from ._common import ID_NAMESPACE, QdrantOptionError, point_id
from .connector import DEFAULT_EDGE_PATH, MODES, QdrantConnector


@hookimpl
def register_connectors(register: Callable[[type], None]) -> None:
    """The pluggy hook: registers the Qdrant connector."""
    register(QdrantConnector)


__all__ = [
    "DEFAULT_EDGE_PATH",
    "ID_NAMESPACE",
    "MODES",
    "QdrantConnector",
    "QdrantOptionError",
    "point_id",
    "register_connectors",
]
