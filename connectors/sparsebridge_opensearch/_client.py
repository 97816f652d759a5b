"""Everything that imports ``opensearch-py``. Imported only when a connector connects, so the plugin
registers (and the core runs) without the client installed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opensearchpy import OpenSearch, Urllib3HttpConnection, helpers
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError
from sparsebridge_lucene_rest import shared_client_options

if TYPE_CHECKING:  # pragma: no cover
    from .connector import OpenSearchConnector

__all__ = ["QuietConnection", "classify", "helpers", "make_client", "probe"]


class QuietConnection(Urllib3HttpConnection):
    """opensearch-py logs a failed request at WARNING with the exception's traceback attached; the
    connector raises a one-line ConnectorError naming the URL and the cause instead, so the log
    line is kept and the traceback dropped."""

    def log_request_fail(self, *args: Any, exception: Exception | None = None, **kwargs: Any) -> None:
        super().log_request_fail(*args, **kwargs)


def make_client(conn: OpenSearchConnector) -> OpenSearch:
    kwargs = shared_client_options(conn)
    kwargs.update(timeout=conn.request_timeout, connection_class=QuietConnection)
    if conn.basic_auth is not None:
        kwargs["http_auth"] = conn.basic_auth
    return OpenSearch(**kwargs)


def probe(client: OpenSearch) -> dict[str, Any]:
    return dict(client.info())


def installed_plugins(client: OpenSearch) -> set[str] | None:
    """Plugin component names on the cluster, or None when the cluster will not say (no rights)."""
    try:
        rows = client.cat.plugins(format="json")
    except TransportError as err:
        if err.status_code in (401, 403):
            return None
        raise
    return {str(r.get("component")) for r in rows or [] if isinstance(r, dict)}


def classify(exc: BaseException) -> tuple[str, int | None, Any] | None:
    if isinstance(exc, OSConnectionError):  # also timeouts and TLS errors
        return "connection", None, None
    if isinstance(exc, TransportError):
        status = exc.status_code if isinstance(exc.status_code, int) else None
        info = exc.info if isinstance(exc.info, dict) else {"error": exc.error}
        return "api", status, info
    return None
