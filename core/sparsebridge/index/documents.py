"""Record ids of corpus documents: the document's own id field, or a hash of its text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

AUTO_ID_FIELDS = ("_id", "id")


def text_id(text: str) -> str:
    """The id of a document without one: the first 32 hex digits of sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def id_problem(doc: Mapping[str, Any], id_field: str | None) -> str | None:
    """Why the document's id cannot be used, or None: ids are strings or integers; a boolean, a
    float, a list or an object would be turned into a string the user never wrote (``true`` ->
    ``"True"``, ``1.0`` -> ``"1.0"``), so it is refused instead."""
    names = (id_field,) if id_field else AUTO_ID_FIELDS
    for name in names:
        value = doc.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            shown = json.dumps(value, default=str)
            return f"id field {name!r} is {_json_kind(value)} ({shown}); ids must be strings or integers"
        bad = next((i for i, ch in enumerate(str(value)) if "\ud800" <= ch <= "\udfff"), None)
        if bad is not None:
            return f"id field {name!r} holds a lone surrogate at position {bad}, which is not valid Unicode text"
        return None
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def document_id(doc: Mapping[str, Any], id_field: str | None) -> str | None:
    """The document's id from ``id_field`` (or ``_id``/``id``) as a string; None when it has none."""
    names = (id_field,) if id_field else AUTO_ID_FIELDS
    for name in names:
        value = doc.get(name)
        if value is not None and str(value) != "":
            return str(value)
    return None
