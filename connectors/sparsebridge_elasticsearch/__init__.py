"""sparsebridge's Elasticsearch connector, registered as the ``elasticsearch`` plugin.

The ``elasticsearch`` client is imported only when a connector connects, so this plugin loads (and
``sparsebridge`` runs with its other connectors) without the client installed.
"""

from __future__ import annotations

from collections.abc import Callable

from sparsebridge.connector.hookspecs import hookimpl

from .connector import ElasticsearchConnector, escape_token, unescape_token

__all__ = ["ElasticsearchConnector", "escape_token", "register_connectors", "unescape_token"]


@hookimpl
def register_connectors(register: Callable[[type], None]) -> None:
    """The pluggy hook: registers the Elasticsearch connector."""
    register(ElasticsearchConnector)
