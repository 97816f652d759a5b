"""sparsebridge's OpenSearch connector, registered as the ``opensearch`` plugin.

``opensearch-py`` is imported only when a connector connects, so this plugin loads (and
``sparsebridge`` runs with its other connectors) without the client installed.
"""

from __future__ import annotations

from collections.abc import Callable

from sparsebridge.connector.hookspecs import hookimpl

from .connector import OpenSearchConnector

__all__ = ["OpenSearchConnector", "register_connectors"]


@hookimpl
def register_connectors(register: Callable[[type], None]) -> None:
    """The pluggy hook: registers the OpenSearch connector."""
    register(OpenSearchConnector)
