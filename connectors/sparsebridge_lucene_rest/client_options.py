"""The client settings the Elasticsearch and OpenSearch clients share (both take the same keyword
names for these): the nodes, who retries what, and TLS."""

from __future__ import annotations

from typing import Any


def shared_client_options(conn: Any) -> dict[str, Any]:
    """Keyword arguments for ``Elasticsearch(...)`` / ``OpenSearch(...)`` from a LuceneConnector:
    its nodes; connection failures move on to another node when there is one (a single node fails
    fast); status retries are the connector's own, with backoff (see :mod:`.retry`); certificate
    checks on ``https`` nodes. Timeouts and credentials are named differently by the two clients
    and are left to each connector."""
    options: dict[str, Any] = {
        "hosts": list(conn.urls),
        "max_retries": len(conn.urls) - 1,
        "retry_on_status": (),
        "retry_on_timeout": False,
    }
    if any(u.startswith("https:") for u in conn.urls):
        options["verify_certs"] = conn.verify_certs
        if conn.ca_certs:
            options["ca_certs"] = conn.ca_certs
        if not conn.verify_certs:
            options["ssl_show_warn"] = False
    return options
