"""Record ids of corpus documents: the document's own id field, or a hash of its text."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

AUTO_ID_FIELDS = ("_id", "id")


def text_id(text: str) -> str:
    """The id of a document without one: the first 32 hex digits of sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def document_id(doc: Mapping[str, Any], id_field: str | None) -> str | None:
    """The document's id from ``id_field`` (or ``_id``/``id``) as a string; None when it has none."""
    names = (id_field,) if id_field else AUTO_ID_FIELDS
    for name in names:
        value = doc.get(name)
        if value is not None and str(value) != "":
            return str(value)
    return None
