"""Backend-neutral pieces of the Qdrant connector: point ids, payloads, filters, option checks.

Nothing here imports a Qdrant client, so the pieces are shared by the Edge engine (``qdrant_edge``)
and the client (``qdrant_client``, server and local modes) and can be tested without either.
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparsebridge.connector import (
    ConnectorError,
    IndexMismatchError,
    IndexSpec,
    Query,
    Record,
    RecordColumns,
    SearchOptions,
)
from sparsebridge.connector.filters import Condition, parse_filter  # noqa: F401  (one filter parser for every backend)
from sparsebridge.connector.kit import OptionError, one_line, redact, redact_url, write_json_atomic  # noqa: F401  (the kit's)

# Point ids must be unsigned ints or UUIDs, so a record's string id becomes a UUIDv5 over this fixed
# namespace: the same id always maps to the same point, and a re-run ingest upserts in place.
# Never change it: existing collections would stop matching their own ids.
ID_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-5d4e-9a3c-2b8e0f4d7c61")

MAX_SPARSE_INDEX = 2**32 - 1  # Qdrant sparse indices are u32

DISTANCES = ("cosine", "dot", "euclid", "manhattan")

# Key under which server/local collections keep what sparsebridge needs in the collection metadata.
META_KEY = "sparsebridge"
META_FORMAT = 1


class QdrantOptionError(OptionError):
    """A connector option is unknown, misspelt, or does not apply to the chosen mode."""


def point_id(record_id: str) -> str:
    """The deterministic Qdrant point id (a UUID string) of a record id."""
    return str(uuid.uuid5(ID_NAMESPACE, record_id))


# Qdrant's messages are cut at 300 characters; every secret value is masked, however short.
one_line = functools.partial(one_line, limit=300)
scrub = functools.partial(redact, min_length=1)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def check_collection_name(name: str) -> str:
    """Collection names double as folder names in Edge mode: keep them plain."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise QdrantOptionError(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-' "
            f"(at most 255, not starting with '.', '_' or '-')"
        )
    return name


def normalize_distance(value: Any) -> str:
    d = str(value).strip().lower()
    aliases = {
        "cos": "cosine",
        "ip": "dot",
        "inner_product": "dot",
        "l2": "euclid",
        "euclidean": "euclid",
        "l1": "manhattan",
    }
    d = aliases.get(d, d)
    if d not in DISTANCES:
        raise QdrantOptionError(f"unknown distance {value!r}; use one of: {', '.join(DISTANCES)}")
    return d


@dataclass
class Layout:
    """What a collection looks like, as far as sparsebridge cares: stored with the collection."""

    sparse_field: str
    dense_field: str | None = None
    dense_size: int | None = None
    distance: str = "cosine"
    payload_fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: IndexSpec, default_distance: str) -> Layout:
        distance = normalize_distance(spec.options.get("distance", default_distance))
        return cls(
            sparse_field=spec.sparse_field,
            dense_field=spec.dense_field,
            dense_size=spec.dense_size,
            distance=distance,
            payload_fields=dict(spec.payload_fields),
            metadata=dict(spec.metadata),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": META_FORMAT,
            "sparse_field": self.sparse_field,
            "dense_field": self.dense_field,
            "dense_size": self.dense_size,
            "distance": self.distance,
            "payload_fields": self.payload_fields,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        return cls(
            sparse_field=str(data["sparse_field"]),
            dense_field=data.get("dense_field"),
            dense_size=data.get("dense_size"),
            distance=str(data.get("distance") or "cosine"),
            payload_fields=dict(data.get("payload_fields") or {}),
            metadata=dict(data.get("metadata") or {}),
        )


def check_layout(
    name: str, sparse_fields: set[str], dense_fields: Mapping[str, tuple[int, str]], want: Layout, where: str
) -> None:
    """Raise IndexMismatchError (with the fix) when an existing collection cannot serve ``want``.

    ``sparse_fields`` are the collection's sparse vector names, ``dense_fields`` maps its dense
    vector names to (size, distance).
    """
    fix = f"drop it ({where}) and ingest again, or use another index name"
    if want.sparse_field not in sparse_fields:
        have = ", ".join(sorted(sparse_fields)) or "none"
        raise IndexMismatchError(
            f"collection {name!r} has no sparse vector named {want.sparse_field!r} (it has: {have}); "
            f"set sparse_field to one it has, or {fix}"
        )
    if want.dense_field is None:
        return
    if want.dense_field not in dense_fields:
        have = ", ".join(sorted(dense_fields)) or "none"
        raise IndexMismatchError(
            f"collection {name!r} has no dense vector named {want.dense_field!r} (it has: {have}); "
            f"set dense_field to one it has, or {fix}"
        )
    size, distance = dense_fields[want.dense_field]
    if size != want.dense_size:
        raise IndexMismatchError(
            f"collection {name!r} stores {want.dense_field!r} vectors of size {size}, the spec has "
            f"{want.dense_size} (another dense model?); use the model it was built with, or {fix}"
        )
    if distance != want.distance:
        raise IndexMismatchError(
            f"collection {name!r} compares {want.dense_field!r} vectors by {distance} distance, the spec "
            f"asks for {want.distance}; set distance={distance!r}, or {fix}"
        )


# --- records ---------------------------------------------------------------------------------------


@dataclass
class PreparedPoint:
    record_id: str
    point_id: str
    sparse_indices: list[int]
    sparse_values: list[float]
    dense: list[float] | None
    payload: dict[str, Any]


def prepare_records(
    records: Sequence[Record], layout: Layout, id_key: str, text_key: str
) -> tuple[list[PreparedPoint], dict[str, str]]:
    """Validate records one by one: good ones become points, bad ones get a reason.

    Duplicate ids in one batch keep the last occurrence (what an upsert would leave anyway).
    """
    failed: dict[str, str] = {}
    by_id: dict[str, PreparedPoint] = {}
    for rec in records:
        rid = rec.id
        if not isinstance(rid, str) or not rid:
            failed[str(rid)] = "record id must be a non-empty string"
            continue
        try:
            by_id.pop(rid, None)
            by_id[rid] = _prepare(rec, layout, id_key, text_key)
            failed.pop(rid, None)
        except ValueError as exc:
            by_id.pop(rid, None)
            failed[rid] = str(exc)
    return list(by_id.values()), failed


def _prepare(rec: Record, layout: Layout, id_key: str, text_key: str) -> PreparedPoint:
    sparse = rec.sparse
    if sparse is None:
        raise ValueError("record has no sparse vector")
    for i in sparse.indices:
        if i > MAX_SPARSE_INDEX:
            raise ValueError(f"sparse index {i} does not fit in uint32 (Qdrant's sparse index type)")
    dense: list[float] | None = None
    if rec.dense is not None:
        if layout.dense_field is None:
            raise ValueError(
                "record has a dense vector but the collection has none; create the index with "
                "dense_field/dense_size to store it"
            )
        dense = [float(x) for x in rec.dense]
        if len(dense) != layout.dense_size:
            raise ValueError(f"dense vector has {len(dense)} dimensions, the collection {layout.dense_size}")
        if not all(math.isfinite(x) for x in dense):
            raise ValueError("dense vector has NaN or infinite values")
    payload = dict(rec.payload or {})
    for key, value in ((id_key, rec.id), (text_key, rec.text)):
        if key in payload and payload[key] != value:
            raise ValueError(
                f"payload key {key!r} is reserved for the record's {'id' if key == id_key else 'text'}; "
                f"rename it, or set the connector option {'id_key' if key == id_key else 'text_key'}"
            )
        payload[key] = value
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {one_line(str(exc))}") from None
    return PreparedPoint(
        record_id=rec.id,
        point_id=point_id(rec.id),
        sparse_indices=[int(i) for i in sparse.indices],
        sparse_values=[float(v) for v in sparse.values],
        dense=dense,
        payload=payload,
    )


def columns_payloads(columns: RecordColumns, id_key: str, text_key: str) -> list[dict[str, Any]] | None:
    """The payloads of a columnar batch as :func:`prepare_records` would make them (the record's
    payload plus its id and text); None when the batch needs :func:`prepare_records` itself: an id
    given twice or empty, a dense vector, an index past uint32, a payload holding NaN or an infinity
    or using a reserved key. Those cases are rare, and there the record path names each bad row."""
    ids = columns.ids
    if columns.dense is not None or columns.payload_constants or len(set(ids)) != len(ids) or "" in ids:
        return None
    if len(columns.indices) and int(columns.indices.max()) > MAX_SPARSE_INDEX:
        return None
    out = []
    for rid, text, payload in zip(ids, columns.texts, columns.payloads):
        if id_key in payload or text_key in payload:
            return None
        payload = dict(payload)
        payload[id_key] = rid
        payload[text_key] = text
        out.append(payload)
    return out


# --- queries ---------------------------------------------------------------------------------------


@dataclass
class PlannedQuery:
    """How one Query runs: which vectors, how fused, with what filter."""

    sparse: tuple[list[int], list[float]] | None
    dense: list[float] | None
    conditions: list[Condition]
    notes: list[str] = field(default_factory=list)

    @property
    def hybrid(self) -> bool:
        return self.sparse is not None and self.dense is not None


def plan_queries(queries: Sequence[Query], layout: Layout, name: str) -> list[PlannedQuery]:
    plans = []
    for n, q in enumerate(queries):
        notes: list[str] = []
        sparse = None
        if q.sparse is not None:
            for i in q.sparse.indices:
                if i > MAX_SPARSE_INDEX:
                    raise ConnectorError(f"query {n}: sparse index {i} does not fit in uint32")
            sparse = ([int(i) for i in q.sparse.indices], [float(v) for v in q.sparse.values])
        dense = None
        if q.dense is not None:
            if layout.dense_field is None:
                if sparse is None:
                    raise ConnectorError(
                        f"query {n} has only a dense vector but collection {name!r} has no dense vector"
                    )
                notes.append(f"collection {name!r} has no dense vector: searched with the sparse vector only")
            else:
                dense = [float(x) for x in q.dense]
                if len(dense) != layout.dense_size:
                    raise ConnectorError(
                        f"query {n}: dense vector has {len(dense)} dimensions, collection {name!r} "
                        f"stores {layout.dense_size}"
                    )
                if not all(math.isfinite(x) for x in dense):
                    raise ConnectorError(f"query {n}: dense vector has NaN or infinite values")
        plans.append(PlannedQuery(sparse=sparse, dense=dense, conditions=parse_filter(q.filter), notes=notes))
    return plans


def engine_rrf_k(options: SearchOptions) -> int:
    """Qdrant's RRF scores a hit at 0-based position ``p`` as ``1 / (k + p)``; sparsebridge's ``rrf_k``
    follows the usual definition (Cormack et al. 2009, Elasticsearch, OpenSearch) ``1 / (k + rank)``
    with 1-based ranks. Passing ``rrf_k + 1`` makes the two identical, scores included."""
    return int(options.rrf_k) + 1


def hit_id(payload: Mapping[str, Any] | None, raw_id: Any, id_key: str) -> str:
    if payload and isinstance(payload.get(id_key), str):
        return payload[id_key]
    return str(raw_id)


def clean_payload(payload: Mapping[str, Any] | None, id_key: str) -> dict[str, Any]:
    """What a Hit carries: the stored payload (record payload plus text) without the id key."""
    if not payload:
        return {}
    return {k: v for k, v in payload.items() if k != id_key}
