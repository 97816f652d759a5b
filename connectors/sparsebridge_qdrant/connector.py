"""The ``qdrant`` connector: sparse (and optional dense) vectors in Qdrant, three ways to run it.

``mode="edge"`` (default)
    The Qdrant engine in-process through ``qdrant-edge-py``, persistent in a folder ``path``
    (default ``./sparsebridge-data/qdrant-edge``). No server; one process uses a collection at a
    time: it takes an exclusive OS lock (``<path>/.<collection>.lock``) before the engine opens
    anything and keeps it until ``close()``. Another process (a ``search`` during an ``ingest``, a
    second ``ingest``) gets a one-line ``ConnectorError`` naming the folder and the holder's pid, and
    the holder's files are never touched; with ``lock_timeout`` (seconds, default 0) it waits that
    long for the holder to finish instead. Edge has no read-only open: for concurrent readers and
    writers use ``mode="server"``. ``flush`` (``"interval"``, default; ``"write"`` / true;
    ``"close"`` / false) and ``flush_interval`` (seconds, default 10): when the segments are flushed
    to disk; what ``write`` returns is in the engine's write-ahead log either way (see ``_edge``).
    Storage (see ``_edge``'s docstring; all but ``optimize_mb`` are fixed when a collection is
    created): ``sparse_on_disk`` (default true: the sparse index of optimized segments is
    memory-mapped, not loaded), ``payload_on_disk`` (default true), ``optimize_mb`` (default 64: a
    writer optimizes whenever the in-RAM appendable segment passes this size on disk, and when it
    closes; 0 never), ``segment_number`` (default 64: segments are merged only past this many) and
    ``max_segment_mb`` (Qdrant's ``max_segment_size``; default Edge's).
``mode="local"``
    ``qdrant-client``'s local mode (pure Python, brute force): ``path=...`` or ``location=":memory:"``
    (the default). Convenient for tests; about three orders of magnitude slower than Edge.
``mode="server"``
    A Qdrant server: ``url``, ``api_key``, ``https``, ``verify`` (TLS certificate check, on by default;
    or a CA bundle path), ``prefer_grpc``, ``grpc_port``, ``timeout``, ``max_retries``.

Common options: ``collection`` (alias ``index``; the collection used before ``ensure_index`` names
one), ``id_key`` / ``text_key`` (payload keys holding the record's id and text, default ``"doc_id"``
and ``"text"``), ``distance`` (dense distance when the IndexSpec does not set ``options["distance"]``:
cosine, dot, euclid, manhattan).

Points: a record's string id becomes a UUIDv5 point id (re-writes upsert in place), the sparse vector
goes to the named sparse vector ``IndexSpec.sparse_field``, the dense one (if any) to
``IndexSpec.dense_field``, and the payload is the record's payload plus its text and its id. Hits
give back the original id. Hybrid queries prefetch ``SearchOptions.candidates`` hits per vector and
fuse them inside the engine with RRF (Qdrant scores ``1 / (k + position)`` with positions from 0, so
``k = rrf_k + 1`` gives sparsebridge's ``1 / (rrf_k + rank)``, see ``_common.engine_rrf_k``) or
DBSF (Qdrant's own, which is sparsebridge's definition). Qdrant has no min-max linear fusion:
``fusion="linear"`` runs both legs in the same batch request and fuses them on the client
(:func:`sparsebridge.connector.fuse_legs`), with a note in the result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from sparsebridge.connector import (
    Connector,
    ConnectorError,
    Hit,
    IndexSpec,
    Query,
    Record,
    RecordColumns,
    SearchOptions,
    SearchResult,
    SparseVector,
    WriteResult,
    check_vocabulary,
    fuse_legs,
)

from ._common import (
    Layout,
    QdrantOptionError,
    check_collection_name,
    clean_payload,
    columns_payloads,
    hit_id,
    normalize_distance,
    plan_queries,
    point_id,
    prepare_records,
    redact_url,
)

MODES = ("edge", "local", "server")
DEFAULT_EDGE_PATH = os.path.join(".", "sparsebridge-data", "qdrant-edge")

_COMMON = {"mode", "collection", "index", "id_key", "text_key", "distance"}
_BY_MODE = {
    "edge": {
        "path",
        "flush",
        "flush_interval",
        "lock_timeout",
        "sparse_on_disk",
        "payload_on_disk",
        "optimize_mb",
        "segment_number",
        "max_segment_mb",
    },
    "local": {"path", "location", "upsert_batch_size"},
    "server": {
        "url",
        "api_key",
        "https",
        "verify",
        "prefer_grpc",
        "grpc_port",
        "timeout",
        "max_retries",
        "retry_backoff",
        "upsert_batch_size",
    },
}


class QdrantConnector(Connector):
    """Qdrant through the embedded Edge engine (default), qdrant-client's local mode, or a server."""

    name: ClassVar[str] = "qdrant"
    description: ClassVar[str] = (
        "Qdrant: embedded Edge engine (default), local mode or server; named sparse vectors, optional "
        "dense vector, hybrid RRF/DBSF fusion"
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        mode = str(options.get("mode", "edge")).lower()
        if mode not in MODES:
            raise QdrantOptionError(f"unknown Qdrant mode {options.get('mode')!r}; use one of: {', '.join(MODES)}")
        self.mode = mode
        # Edge's folder and local mode's files belong to one process (see Connector.single_writer).
        self.single_writer = mode in ("edge", "local")
        allowed = _COMMON | _BY_MODE[mode]
        for key in options:
            if key not in allowed:
                other = [m for m in MODES if key in _BY_MODE[m]]
                hint = f" (it applies to mode={other[0]!r})" if other else ""
                raise QdrantOptionError(
                    f"option {key!r} is not known to the qdrant connector in mode={mode!r}{hint}; "
                    f"known: {', '.join(sorted(allowed))}"
                )
        if "collection" in options and "index" in options and options["collection"] != options["index"]:
            raise QdrantOptionError("give the collection name once: collection=... or index=..., not both")
        name = options.get("collection", options.get("index"))
        self._collection: str | None = check_collection_name(name) if name is not None else None
        self.id_key = str(options.get("id_key", "doc_id"))
        self.text_key = str(options.get("text_key", "text"))
        if not self.id_key or not self.text_key or self.id_key == self.text_key:
            raise QdrantOptionError("id_key and text_key must be two different non-empty payload keys")
        self.default_distance = normalize_distance(options.get("distance", "cosine"))
        self._layout: Layout | None = None
        self._backend = self._make_backend(options)

    def _make_backend(self, options: dict[str, Any]) -> Any:
        if self.mode == "edge":
            from ._edge import EdgeBackend, EdgeStorage

            return EdgeBackend(
                path=options.get("path") or DEFAULT_EDGE_PATH,
                flush=options.get("flush", "interval"),
                lock_timeout=options.get("lock_timeout", 0.0),
                flush_interval=options.get("flush_interval", 10.0),
                storage=EdgeStorage.from_options(options),
            )
        from ._client import ClientBackend

        kwargs = {k: v for k, v in options.items() if k in _BY_MODE[self.mode]}
        return ClientBackend(self.mode, **kwargs)

    def __repr__(self) -> str:
        shown = {}
        for k, v in self.options.items():
            if k in self.secret_options:
                shown[k] = "***"
            elif k == "url" and isinstance(v, str):
                shown[k] = redact_url(v)
            else:
                shown[k] = v
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def collection(self) -> str | None:
        return self._collection

    def _name(self) -> str:
        if self._collection is None:
            raise ConnectorError(
                "no Qdrant collection selected: pass collection=... to the connector or call ensure_index(spec) first"
            )
        return self._collection

    def _current(self) -> tuple[str, Layout]:
        name = self._name()
        if self._layout is None:
            layout = self._backend.read_layout(name)
            if layout is None:
                raise ConnectorError(
                    f"collection {name!r} does not exist in {self._backend.describe()}; run an ingest first"
                )
            self._layout = layout
        return name, self._layout

    # -- contract -----------------------------------------------------------------------------------
    def ensure_index(self, spec: IndexSpec) -> None:
        name = check_collection_name(spec.name)
        want = Layout.from_spec(spec, self.default_distance)
        have = self._backend.read_layout(name)
        if have is None:
            self._backend.create(name, want)
            layout = want
        else:
            check_vocabulary(have.metadata, spec.metadata, name)
            self._backend.check(name, want)
            layout = want
            layout.metadata = dict(have.metadata)
            if layout.dense_field is None and have.dense_field is not None:
                layout.dense_field, layout.dense_size, layout.distance = (
                    have.dense_field,
                    have.dense_size,
                    have.distance,
                )
        self._collection = name
        self._layout = layout

    def write(self, records: Sequence[Record]) -> WriteResult:
        name, layout = self._current()
        points, failed = prepare_records(records, layout, self.id_key, self.text_key)
        written, more_failed, retries = self._backend.upsert(name, layout, points)
        failed.update(more_failed)
        return WriteResult(written=list(written), failed=failed, retries=retries)

    def write_columns(self, columns: RecordColumns) -> WriteResult:
        """A vector dataset's batch: on Edge the points are built from the flat arrays (no Record per
        row); what the fast path cannot vouch for goes through :meth:`write`, which names bad rows."""
        name, layout = self._current()
        upsert_columns = getattr(self._backend, "upsert_columns", None)
        payloads = None if upsert_columns is None else columns_payloads(columns, self.id_key, self.text_key)
        if payloads is None:
            return super().write_columns(columns)
        written, failed, retries = upsert_columns(name, layout, columns, payloads)
        return WriteResult(written=list(written), failed=failed, retries=retries)

    def search(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[SearchResult]:
        options = options or SearchOptions()
        if not queries:
            return []
        name, layout = self._current()
        plans = plan_queries(queries, layout, name)
        if options.fusion == "linear" and any(p.hybrid for p in plans):
            raw = self._search_linear(name, layout, plans, options)
        else:
            raw = self._backend.search(name, layout, plans, options, self.id_key)
        results = []
        for plan, points in zip(plans, raw):
            notes = list(plan.notes)
            if plan.hybrid and options.fusion == "linear":
                notes.append("Qdrant has no min-max linear fusion: the legs were fused on the client")
            if plan.sparse is not None and not plan.sparse[0]:
                notes.append("the sparse query vector is empty (no term kept): it matches nothing")
            hits = [
                Hit(
                    id=hit_id(payload, raw_id, self.id_key),
                    score=score,
                    payload=clean_payload(payload, self.id_key) if options.with_payload else {},
                )
                for raw_id, score, payload in points
            ]
            results.append(SearchResult(hits=hits, notes=notes))
        return results

    def _search_linear(self, name: str, layout: Layout, plans: list, options: SearchOptions) -> list:
        """Linear fusion on the client: every hybrid query's two legs (``candidates`` hits each) go
        in one batch with the other queries, then :func:`fuse_legs` combines them."""
        legs = dataclasses.replace(options, top_k=options.candidates)
        batch: list = []
        where: list[tuple[int, int]] = []  # (first index in batch, number of requests) per plan
        for plan in plans:
            if plan.hybrid:
                where.append((len(batch), 2))
                batch += [dataclasses.replace(plan, dense=None), dataclasses.replace(plan, sparse=None)]
            else:
                where.append((len(batch), 1))
                batch.append(plan)
        raw = self._backend.search(name, layout, batch, legs, self.id_key)
        out = []
        for start, n in where:
            if n == 1:
                out.append(raw[start][: options.top_k])
                continue
            by_key: dict[str, tuple] = {}
            hit_legs = []
            for points in raw[start : start + 2]:
                hits = []
                for raw_id, score, payload in points:
                    by_key[str(raw_id)] = (raw_id, payload)
                    hits.append(Hit(id=str(raw_id), score=score))
                hit_legs.append(hits)
            out.append([(by_key[h.id][0], h.score, by_key[h.id][1]) for h in fuse_legs(hit_legs, options)])
        return out

    def check(self) -> None:
        ping = getattr(self._backend, "ping", None)  # a server answers or fails now; Edge has nothing to reach
        if ping is not None:
            ping()

    def count(self) -> int:
        """Number of points in the collection; 0 when it does not exist."""
        name = self._name()
        if not self._backend.exists(name):
            return 0
        return self._backend.count(name)

    def delete(self, ids: Sequence[str]) -> None:
        name = self._name()
        if not ids or not self._backend.exists(name):
            return
        self._backend.delete(name, [point_id(str(i)) for i in ids])

    def drop(self) -> None:
        name = self._name()
        self._backend.drop(name)
        self._layout = None

    def index_metadata(self) -> dict[str, Any] | None:
        name = self._name()
        layout = self._backend.read_layout(name)
        return None if layout is None else dict(layout.metadata)

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        name = self._name()
        if not ids or not self._backend.exists(name):
            return {}
        payloads = self._backend.retrieve(name, [point_id(str(i)) for i in ids])
        wanted = {str(i) for i in ids}
        out = {}
        for payload in payloads:
            rid = payload.get(self.id_key)
            if isinstance(rid, str) and rid in wanted:
                out[rid] = clean_payload(payload, self.id_key)
        return out

    def close(self) -> None:
        self._backend.close()

    def export(self, vocabulary: Sequence[str], batch_size: int = 500) -> Iterator[list[Record]]:
        """Every point back as a Record (scroll with payload and vectors); Qdrant keeps float32
        weights, so indices and values are exactly those written."""
        name, layout = self._current()
        tokens = list(vocabulary)
        offset: Any = None
        while True:
            points, offset = self._backend.scroll(name, layout, offset, batch_size)
            batch = []
            for payload, indices, values, dense in points:
                rid = payload.pop(self.id_key, None)
                text = payload.pop(self.text_key, "")
                if not isinstance(rid, str):
                    raise ConnectorError(
                        f"collection {name!r} has a point without a string {self.id_key!r} payload key; "
                        f"it was not written by sparsebridge (or id_key differs)"
                    )
                names = [tokens[i] if i < len(tokens) else f"[{i}]" for i in indices]
                sparse = SparseVector.from_pairs(zip(indices, names, values))
                batch.append(
                    Record(
                        id=rid, text=text if isinstance(text, str) else "", sparse=sparse, payload=payload, dense=dense
                    )
                )
            if batch:
                yield batch
            if offset is None:
                return
