"""Everything that imports the ``elasticsearch`` client. Imported only when a connector connects, so
the plugin registers (and the core runs) without the client installed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import elasticsearch
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import HttpHeaders, Transport, TransportError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError, helpers
from sparsebridge_lucene_rest import shared_client_options

if TYPE_CHECKING:  # pragma: no cover
    from .connector import ElasticsearchConnector

CLIENT_MAJOR = int(elasticsearch.__versionstr__.split(".")[0])
_COMPAT_RE = re.compile(r"application/vnd\.elasticsearch\+([\w.-]+)\s*;\s*compatible-with=\d+")

__all__ = ["CLIENT_MAJOR", "VersionAdaptiveTransport", "classify", "helpers", "make_client", "probe"]


class VersionAdaptiveTransport(Transport):
    """A transport that lets the 9.x client talk to 8.x clusters.

    The 9.x client asks for ``application/vnd.elasticsearch+json; compatible-with=9`` on every
    request, which an 8.x server rejects (``media_type_header_exception``). Until the server's
    version is known (``server_major`` is None: the first ``GET /``), and whenever it is older than
    the client, the compatibility media types are sent as the plain ``application/json`` /
    ``application/x-ndjson`` that every Elasticsearch since 7.x understands natively. A server of
    the client's major version or newer gets the client's headers untouched.
    """

    server_major: int | None = None

    def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:  # type: ignore[override]
        headers = kwargs.get("headers")
        major = self.server_major
        if headers and (major is None or major < CLIENT_MAJOR):
            plain = HttpHeaders(headers)
            for name in ("accept", "content-type"):
                value = plain.get(name)
                if value:
                    plain[name] = _COMPAT_RE.sub(r"application/\1", value)
            kwargs["headers"] = plain
        return super().perform_request(method, target, **kwargs)


def make_client(conn: ElasticsearchConnector) -> Elasticsearch:
    kwargs = shared_client_options(conn)
    kwargs.update(request_timeout=conn.request_timeout, transport_class=VersionAdaptiveTransport)
    if conn.api_key is not None:
        kwargs["api_key"] = conn.api_key
    elif conn.basic_auth is not None:
        kwargs["basic_auth"] = conn.basic_auth
    return Elasticsearch(**kwargs)


def probe(client: Elasticsearch) -> dict[str, Any]:
    """``GET /`` once, without retries; tells the transport the server's major version."""
    resp = client.options(max_retries=0).info()
    body = dict(resp.body)
    number = str((body.get("version") or {}).get("number", ""))
    major = re.match(r"\d+", number)
    client.transport.server_major = int(major.group(0)) if major else None  # type: ignore[attr-defined]
    return body


def classify(exc: BaseException) -> tuple[str, int | None, Any] | None:
    if isinstance(exc, UnsupportedProductError):
        return "product", exc.meta.status, None
    if isinstance(exc, ApiError):
        return "api", exc.meta.status, exc.body
    if isinstance(exc, TransportConnectionError):
        return "connection", None, None
    if isinstance(exc, TransportError):  # timeouts, TLS and other transport failures
        return "connection", None, None
    return None
