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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparsebridge.connector import Filter
from sparsebridge.connector.filters import parse_filter

META_KEY = "sparsebridge"
META_FORMAT = 1
TEXT_FIELD = "text"
PAYLOAD_FIELD = "payload"
RESERVED_FIELDS = (TEXT_FIELD, PAYLOAD_FIELD)


def filter_clauses(flt: Filter | None) -> list[dict[str, Any]]:
    """Query.filter (parsed by ``sparsebridge.filters``) -> bool filter clauses on ``payload.<key>``:
    equality is a ``term``, any-of a ``terms`` (an empty list matches nothing, as on every backend)."""
    clauses: list[dict[str, Any]] = []
    for c in parse_filter(flt):
        path = f"{PAYLOAD_FIELD}.{c.key}"
        if c.kind == "any":
            clauses.append({"terms": {path: list(c.values)}})
        else:
            clauses.append({"term": {path: {"value": c.value}}})
    return clauses


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
    # The sparse field's mapping as the engine holds it (e.g. Elasticsearch's ``index_options``).
    sparse_mapping: dict[str, Any] = field(default_factory=dict)


def hit_payload(source: Mapping[str, Any]) -> dict[str, Any]:
    """What a Hit carries: the record's payload plus its text under ``"text"`` (a payload key
    ``"text"`` wins)."""
    payload = dict(source.get(PAYLOAD_FIELD) or {})
    if TEXT_FIELD in source:
        payload.setdefault(TEXT_FIELD, source[TEXT_FIELD])
    return payload
