"""The connector author's kit: the helpers every backend plugin needs, public and in one place.

* messages: :func:`one_line` (an engine's multi-line error as one bounded line);
* secrets: :func:`redact` (secret values masked in a text), :func:`redact_url` (the user and
  password of any URL in a text), :func:`split_credentials` (a URL's credentials taken out, for a
  client that wants them apart);
* options: :class:`OptionError`, the error of an unknown, misspelt or out-of-range option;
* files: :func:`write_json_atomic` and :func:`fsync_dir`, for plugins that keep files of their own.

The built-in plugins (Qdrant, and Elasticsearch / OpenSearch through ``sparsebridge_lucene_rest``)
use these; a third-party plugin imports them from here rather than from another plugin. The
conformance tests a plugin subclasses are in :mod:`sparsebridge.testing`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConnectorError
from .durability import fsync_dir

__all__ = [
    "OptionError",
    "fsync_dir",
    "one_line",
    "redact",
    "redact_url",
    "split_credentials",
    "write_json_atomic",
]


class OptionError(ConnectorError, ValueError):
    """A connector option is unknown, misspelt or out of range."""


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to
    ``limit`` characters with ``...``: what the CLI's one ``Error:`` line can hold."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact(text: str, secrets: Iterable[str], *, min_length: int = 3) -> str:
    """``text`` with every secret value replaced by ``***``. Values shorter than ``min_length``
    are left alone by default (masking a two-letter password would garble ordinary words);
    ``min_length=1`` masks every non-empty one."""
    for secret in secrets:
        if secret and len(secret) >= min_length:
            text = text.replace(secret, "***")
    return text


_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")


def redact_url(text: str) -> str:
    """``text`` with the user and password of any URL in it replaced by ``***``
    (``http://elastic:PASS@host:9200`` -> ``http://***@host:9200``)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``https://user:pw@host:9200`` -> (``https://host:9200``, (user, pw)); a URL without
    credentials comes back unchanged with None."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, (parts.username or "", parts.password or "")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half of one
    (written to a temporary name, fsynced, renamed over, the directory fsynced)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)
