"""The REST dialect Elasticsearch and OpenSearch share: document layout, ``_meta`` bookkeeping and
``bool`` filters.

Document layout in the index (field names other than the sparse and dense ones are fixed)::

    {"text": "...", "<sparse_field>": {key: weight, ...}, "payload": {...}, "<dense_field>": [...]}

``payload`` is an object mapped with ``dynamic: "false"``: the keys named in
``IndexSpec.payload_fields`` are indexed with their type (so filters on them work), other keys are
kept in ``_source`` only. The mapping ``_meta`` holds ``IndexSpec.metadata`` plus, under the key
``"sparsebridge"``, what the connector needs to read the index back (sparse field name and how its
keys are written), so a connector opened with only ``index=...`` finds its way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparsebridge.connector import Filter

META_KEY = "sparsebridge"
META_FORMAT = 1
TEXT_FIELD = "text"
PAYLOAD_FIELD = "payload"
RESERVED_FIELDS = (TEXT_FIELD, PAYLOAD_FIELD)


def filter_clauses(flt: Filter | None) -> list[dict[str, Any]]:
    """Query.filter -> bool filter clauses on ``payload.<key>``: a scalar is a ``term``, a list or
    tuple a ``terms`` (any of)."""
    clauses: list[dict[str, Any]] = []
    for key, value in (flt or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter keys must be non-empty strings, got {key!r}")
        path = f"{PAYLOAD_FIELD}.{key}"
        if isinstance(value, (list, tuple, set, frozenset)):
            values = list(value)
            if not values:
                raise ValueError(f"filter on {key!r} has an empty list of values")
            for v in values:
                _check_filter_value(key, v)
            clauses.append({"terms": {path: values}})
        else:
            _check_filter_value(key, value)
            clauses.append({"term": {path: {"value": value}}})
    return clauses


def _check_filter_value(key: str, value: Any) -> None:
    if value is None or isinstance(value, (Mapping, list, tuple)):
        raise ValueError(f"filter on {key!r}: values must be strings, numbers or booleans, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"filter on {key!r}: value {value!r} is not finite")


def combine(clause: dict[str, Any], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """A scoring clause alone, or inside a bool with the (non-scoring) filter clauses."""
    if not filters:
        return clause
    return {"bool": {"must": [clause], "filter": filters}}


@dataclass
class Layout:
    """How an existing index stores things, as far as reading and writing it is concerned."""

    index: str
    sparse_field: str
    sparse_type: str
    sparse_keys: str  # engine-specific key scheme, recorded in _meta
    dense_field: str | None = None
    dense_size: int | None = None
    payload_fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def hit_payload(source: Mapping[str, Any]) -> dict[str, Any]:
    """What a Hit carries: the record's payload plus its text under ``"text"`` (a payload key
    ``"text"`` wins)."""
    payload = dict(source.get(PAYLOAD_FIELD) or {})
    if TEXT_FIELD in source:
        payload.setdefault(TEXT_FIELD, source[TEXT_FIELD])
    return payload
