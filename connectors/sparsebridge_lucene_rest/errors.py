"""Errors and one-line messages of the Elasticsearch and OpenSearch connectors: option errors, the
cause of a connection failure, the reason of an engine error object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sparsebridge.connector import ConnectorError
from sparsebridge.connector.kit import OptionError, one_line  # noqa: F401  (the kit's, re-exported)


def missing_client(connector: str, package: str, err: ImportError) -> ConnectorError:
    """The error of a connector whose engine client library is not installed: names the package
    and the extra that brings it."""
    return ConnectorError(
        f"the {connector} connector needs the {package!r} package ({err}); "
        f"install it with: pip install 'sparsebridge[{connector}]'"
    )


# --- small pure helpers --------------------------------------------------------------------------


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^)'\"\]\n]+)")


def connection_cause(exc: BaseException) -> str:
    """A short human cause for a connection failure ("Connection refused", "timed out"...)."""
    text = str(exc)
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # look through the chained causes too
        seen.add(id(cur))
        text += "\n" + str(cur)
        cur = cur.__cause__ or cur.__context__
    match = _ERRNO_RE.search(text)
    if match:
        return match.group(1).strip().rstrip(".")
    lowered = text.lower()
    for needle, cause in (
        ("certificate verify failed", "TLS certificate verify failed (set ca_certs, or verify_certs=False)"),
        ("wrong version number", "TLS handshake failed (is the server plain http?)"),
        ("ssl", "TLS error"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("connection refused", "Connection refused"),
        ("remote end closed", "connection closed by the server"),
        ("connection reset", "connection reset by the server"),
    ):
        if needle in lowered:
            return cause
    return one_line(str(exc), 200)


def error_reason(error: Any) -> str:
    """``type: reason`` (plus the first ``caused_by``) of an engine error object or string."""
    if isinstance(error, Mapping):
        parts = [f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")]
        caused = error.get("caused_by")
        if isinstance(caused, Mapping):
            parts.append(f"caused by {caused.get('type', 'error')}: {caused.get('reason', '')}".rstrip(": "))
        return one_line("; ".join(parts))
    return one_line(error if error is not None else "unknown error")
