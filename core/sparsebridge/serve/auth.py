"""The optional bearer API key (Elasticsearch's custom service sends it from ``secret_parameters``)."""

from __future__ import annotations

import hmac

from .errors import Unauthorized


def check_bearer(header: str | None, api_key: str | None) -> None:
    """Raise :class:`Unauthorized` unless ``header`` is ``Bearer <api_key>`` (no key configured: open).

    The comparison takes the same time wherever the strings differ, so the key cannot be guessed
    byte by byte from response times.
    """
    if api_key is None:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Unauthorized("missing or wrong API key: send the header 'Authorization: Bearer <key>'")
