"""qdrant-client backend: a Qdrant server (``mode="server"``) or the client's local mode (``mode="local"``).

What sparsebridge needs to remember about a collection (vector names, IndexSpec.metadata) lives in
the collection's own metadata (Qdrant >= 1.16) under the key ``"sparsebridge"``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sparsebridge.connector import ConnectorError, IndexMismatchError, SearchOptions
from sparsebridge.errors import SparsebridgeWarning

from ._common import (
    META_KEY,
    Condition,
    Layout,
    PlannedQuery,
    PreparedPoint,
    check_layout,
    engine_rrf_k,
    one_line,
    redact_url,
    scrub,
)

T = TypeVar("T")

_PAYLOAD_SCHEMA = {
    "keyword": "KEYWORD",
    "text": "TEXT",
    "integer": "INTEGER",
    "float": "FLOAT",
    "boolean": "BOOL",
}
_DISTANCE = {"cosine": "COSINE", "dot": "DOT", "euclid": "EUCLID", "manhattan": "MANHATTAN"}


def _import_client() -> tuple[Any, Any]:
    try:
        from qdrant_client import QdrantClient, models
    except ImportError:  # pragma: no cover - the extra is not installed
        raise ConnectorError(
            "mode='server' and mode='local' need the qdrant-client package: pip install 'sparsebridge[qdrant]'"
        ) from None
    return QdrantClient, models


def describe_error(exc: BaseException) -> tuple[str, int | None, bool]:
    """(one-line cause, HTTP status if any, transient?) of a qdrant-client exception."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        body = exc.content[:300].decode("utf-8", "replace") if exc.content else ""
        cause = f"HTTP {status} {exc.reason_phrase}: {body}".strip().rstrip(":")
        return one_line(cause), status, status is not None and (status >= 500 or status == 429)
    if isinstance(exc, ResponseHandlingException):
        src = exc.source
        return one_line(f"{type(src).__name__}: {src}" if str(src) else type(src).__name__), None, True
    try:
        import grpc

        if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
            code = exc.code()
            name = getattr(code, "name", str(code))
            transient = name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
            status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "INVALID_ARGUMENT": 400}.get(
                name
            )
            return one_line(f"{name}: {exc.details()}"), status, transient
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return one_line(f"{type(exc).__name__}: {exc}"), None, True
    return one_line(f"{type(exc).__name__}: {exc}"), None, False


class ClientBackend:
    """Server or local mode through :class:`qdrant_client.QdrantClient`."""

    def __init__(
        self,
        mode: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        https: bool | None = None,
        verify: bool | str = True,
        prefer_grpc: bool = False,
        grpc_port: int | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        path: str | None = None,
        location: str | None = None,
        upsert_batch_size: int = 256,
    ) -> None:
        QdrantClient, models = _import_client()
        self.models = models
        self.mode = mode
        self._secrets = [api_key] if api_key else []
        self.max_retries = int(max_retries)
        self.retry_backoff = float(retry_backoff)
        self.upsert_batch_size = int(upsert_batch_size)
        self._probed = False
        if mode == "server":
            if not url:
                raise ConnectorError("mode='server' needs url=... (e.g. http://127.0.0.1:6333)")
            # With prefer_grpc the client dials the gRPC port (6334 unless grpc_port says otherwise).
            self.where = _grpc_address(url, grpc_port) if prefer_grpc else redact_url(url)
            kwargs: dict[str, Any] = {
                "url": url,
                "api_key": api_key,
                "prefer_grpc": bool(prefer_grpc),
                "timeout": int(timeout) if timeout else None,
                "check_compatibility": False,  # it probes in a thread and warns; we probe ourselves
            }
            if https is not None:
                kwargs["https"] = bool(https)
            if grpc_port is not None:
                kwargs["grpc_port"] = int(grpc_port)
            if prefer_grpc:
                if verify is False:
                    raise ConnectorError(
                        "verify=False is not available with prefer_grpc=True (gRPC always checks TLS "
                        "certificates); give verify='/path/to/ca.pem' or use REST"
                    )
                if isinstance(verify, str):
                    try:
                        with open(verify, "rb") as fh:
                            kwargs["grpc_options"] = {"root_certificates": fh.read()}
                    except OSError as exc:
                        raise ConnectorError(f"cannot read the CA bundle verify={verify!r}: {exc}") from None
            elif isinstance(verify, str):
                # httpx takes a CA bundle as an SSL context (a plain path is deprecated there).
                try:
                    where = {"capath": verify} if os.path.isdir(verify) else {"cafile": verify}
                    kwargs["verify"] = ssl.create_default_context(**where)
                except (OSError, ssl.SSLError) as exc:
                    raise ConnectorError(f"cannot read the CA bundle verify={verify!r}: {exc}") from None
            else:
                kwargs["verify"] = bool(verify)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                self.client = QdrantClient(**kwargs)
            for w in seen:
                # An api_key over plain http is worth a warning, in our words and without a source line.
                if "insecure connection" in str(w.message):
                    warnings.warn(
                        f"the Qdrant api_key is sent unencrypted to {self.where}; use an https:// url",
                        SparsebridgeWarning,
                        stacklevel=2,
                    )
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            if path is not None and location is not None:
                raise ConnectorError("mode='local' takes path=... or location=':memory:', not both")
            self.where = f"local Qdrant at {path}" if path is not None else "local Qdrant in memory"
            if path is not None:
                self.client = QdrantClient(path=str(path))
            else:
                self.client = QdrantClient(location=location or ":memory:")
            self._probed = True

    def describe(self) -> str:
        return f"Qdrant at {self.where}" if self.mode == "server" else self.where

    def ping(self) -> None:
        """One request without retries, so that an unreachable server fails fast (refused at once)."""
        if self.mode == "server" and not self._probed:
            self.call("connect", lambda: self.client.get_collections(), retry=False)

    # -- requests -----------------------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException) -> ConnectorError:
        cause, status, _ = describe_error(exc)
        cause = scrub(cause, self._secrets)
        if status in (401, 403):
            return ConnectorError(f"Qdrant at {self.where} refused {what} ({cause}); check api_key")
        if not self._probed:
            return ConnectorError(f"cannot reach Qdrant at {self.where}: {cause}")
        return ConnectorError(f"Qdrant {what} failed at {self.where}: {cause}")

    def call(self, what: str, fn: Callable[[], T], retry: bool = True) -> tuple[T, int]:
        """Run one request; retry transient failures (not before the server was reached once)."""
        retries = 0
        while True:
            try:
                result = fn()
                self._probed = True
                return result, retries
            except (ConnectorError, IndexMismatchError):
                raise
            except Exception as exc:
                _, status, transient = describe_error(exc)
                if self.mode == "server" and retry and self._probed and transient and retries < self.max_retries:
                    time.sleep(self.retry_backoff * (2**retries))
                    retries += 1
                    continue
                raise self._fail(what, exc) from exc

    # -- collection lifecycle -------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.call("collection lookup", lambda: self.client.collection_exists(name))[0]

    def _info(self, name: str) -> Any | None:
        if not self.exists(name):
            return None
        return self.call("collection info", lambda: self.client.get_collection(name))[0]

    @staticmethod
    def _vectors(info: Any) -> tuple[set[str], dict[str, tuple[int, str]]]:
        params = info.config.params
        sparse = set((params.sparse_vectors or {}).keys())
        vectors = params.vectors
        dense: dict[str, tuple[int, str]] = {}
        if isinstance(vectors, dict):
            for k, v in vectors.items():
                dense[k] = (int(v.size), _distance_name(v.distance))
        elif vectors is not None:
            dense[""] = (int(vectors.size), _distance_name(vectors.distance))
        return sparse, dense

    def read_layout(self, name: str) -> Layout | None:
        info = self._info(name)
        if info is None:
            return None
        meta = info.config.metadata or {}
        stored = meta.get(META_KEY) if isinstance(meta, dict) else None
        if isinstance(stored, dict) and "sparse_field" in stored:
            return Layout.from_json(stored)
        sparse, dense = self._vectors(info)
        if len(sparse) != 1:
            raise ConnectorError(
                f"collection {name!r} at {self.where} has {len(sparse)} sparse vectors and no sparsebridge "
                f"metadata; call ensure_index with the IndexSpec to say which one to use"
            )
        layout = Layout(sparse_field=next(iter(sparse)))
        named = {k: v for k, v in dense.items() if k}
        if len(named) == 1:
            layout.dense_field, (layout.dense_size, layout.distance) = next(iter(named.items()))
        return layout

    def check(self, name: str, want: Layout) -> Layout:
        info = self._info(name)
        if info is None:
            raise ConnectorError(f"collection {name!r} vanished at {self.where}")
        sparse, dense = self._vectors(info)
        check_layout(name, sparse, dense, want, f"delete collection {name!r}")
        self.ensure_payload_indexes(name, want.payload_fields, info)
        have = self.read_layout(name)
        assert have is not None
        return have

    def create(self, name: str, layout: Layout) -> None:
        m = self.models
        vectors = {}
        if layout.dense_field is not None:
            vectors[layout.dense_field] = m.VectorParams(
                size=int(layout.dense_size or 0), distance=getattr(m.Distance, _DISTANCE[layout.distance])
            )
        self.call(
            "collection creation",
            lambda: self.client.create_collection(
                collection_name=name,
                vectors_config=vectors,
                sparse_vectors_config={layout.sparse_field: m.SparseVectorParams()},
                metadata={META_KEY: layout.to_json()},
            ),
        )
        info = self._info(name)
        stored = (info.config.metadata or {}) if info is not None else {}
        if layout.metadata and META_KEY not in stored:
            self.call("collection deletion", lambda: self.client.delete_collection(name))
            raise ConnectorError(
                f"Qdrant at {self.where} did not keep the collection metadata (it needs Qdrant >= 1.16); "
                f"upgrade the server"
            )
        self.ensure_payload_indexes(name, layout.payload_fields, info)

    def ensure_payload_indexes(self, name: str, fields: dict[str, str], info: Any | None = None) -> None:
        if not fields:
            return
        m = self.models
        if info is None:
            info = self._info(name)
        schema = dict(getattr(info, "payload_schema", None) or {})
        for key, kind in fields.items():
            want = getattr(m.PayloadSchemaType, _PAYLOAD_SCHEMA[kind])
            if key in schema:
                have = schema[key].data_type
                if str(getattr(have, "value", have)).lower() != str(want.value).lower():
                    raise IndexMismatchError(
                        f"collection {name!r} indexes payload field {key!r} as "
                        f"{getattr(have, 'value', have)}, the spec asks for {kind}; change payload_fields, "
                        f"or drop the collection and ingest again"
                    )
                continue
            with warnings.catch_warnings():
                # Local mode stores the index but says it has no effect; filters work without it.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                self.call(
                    "payload index creation",
                    lambda key=key, want=want: self.client.create_payload_index(
                        collection_name=name, field_name=key, field_schema=want, wait=True
                    ),
                )

    def drop(self, name: str) -> None:
        if self.exists(name):
            self.call("collection deletion", lambda: self.client.delete_collection(name))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing twice, or a dead server: nothing to release
            self.client.close()

    # -- data ---------------------------------------------------------------------------------------
    def _point(self, layout: Layout, p: PreparedPoint) -> Any:
        m = self.models
        vector: dict[str, Any] = {layout.sparse_field: m.SparseVector(indices=p.sparse_indices, values=p.sparse_values)}
        if p.dense is not None and layout.dense_field is not None:
            vector[layout.dense_field] = p.dense
        return m.PointStruct(id=p.point_id, vector=vector, payload=p.payload)

    def upsert(
        self, name: str, layout: Layout, points: Sequence[PreparedPoint]
    ) -> tuple[list[str], dict[str, str], int]:
        written: list[str] = []
        failed: dict[str, str] = {}
        retries = 0
        for start in range(0, len(points), self.upsert_batch_size):
            chunk = points[start : start + self.upsert_batch_size]
            structs = [self._point(layout, p) for p in chunk]
            try:
                _, r = self.call("upsert", lambda structs=structs: self.client.upsert(name, points=structs, wait=True))
                retries += r
                written.extend(p.record_id for p in chunk)
            except ConnectorError as exc:
                if _status_of(exc) not in (400, 422):
                    raise
                # The server refused the batch for a bad point: find it point by point.
                for p, s in zip(chunk, structs):
                    try:
                        _, r = self.call("upsert", lambda s=s: self.client.upsert(name, points=[s], wait=True))
                        retries += r
                        written.append(p.record_id)
                    except ConnectorError as one:
                        if _status_of(one) not in (400, 422):
                            raise
                        failed[p.record_id] = str(one)
        return written, failed, retries

    def delete(self, name: str, point_ids: Sequence[str]) -> None:
        if not point_ids:
            return
        m = self.models
        self.call(
            "delete",
            lambda: self.client.delete(name, points_selector=m.PointIdsList(points=list(point_ids)), wait=True),
        )

    def count(self, name: str) -> int:
        return int(self.call("count", lambda: self.client.count(name, exact=True))[0].count)

    def retrieve(self, name: str, point_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not point_ids:
            return []
        recs = self.call(
            "retrieve",
            lambda: self.client.retrieve(name, ids=list(point_ids), with_payload=True, with_vectors=False),
        )[0]
        return [r.payload or {} for r in recs]

    def _match(self, key: str, value: Any) -> Any:
        m = self.models
        if isinstance(value, float) and not isinstance(value, bool):
            return m.FieldCondition(key=key, range=m.Range(gte=value, lte=value))
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def _condition(self, c: Condition) -> Any:
        m = self.models
        if c.kind == "eq":
            return self._match(c.key, c.value)
        values = c.values
        if all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            return m.FieldCondition(key=c.key, match=m.MatchAny(any=list(values)))
        return m.Filter(should=[self._match(c.key, v) for v in values])

    def _filter(self, conditions: list[Condition]) -> Any:
        if not conditions:
            return None
        return self.models.Filter(must=[self._condition(c) for c in conditions])

    def search(
        self, name: str, layout: Layout, plans: Sequence[PlannedQuery], options: SearchOptions, id_key: str
    ) -> list[list[tuple[Any, float, dict[str, Any]]]]:
        m = self.models
        bo = options.backend_options or {}
        params = None
        if self.mode == "server" and (bo.get("exact") or bo.get("hnsw_ef")):  # local mode is always exact
            params = m.SearchParams(hnsw_ef=bo.get("hnsw_ef"), exact=bool(bo.get("exact", False)))
        with_payload: Any = True if options.with_payload else [id_key]
        requests = []
        for plan in plans:
            flt = self._filter(plan.conditions)
            sparse_q = dense_q = None
            if plan.sparse is not None:
                sparse_q = m.SparseVector(indices=plan.sparse[0], values=plan.sparse[1])
            if plan.dense is not None:
                dense_q = plan.dense
            if plan.hybrid:
                fusion = (
                    m.RrfQuery(rrf=m.Rrf(k=engine_rrf_k(options)))
                    if options.fusion == "rrf"
                    else m.FusionQuery(fusion=m.Fusion.DBSF)
                )
                prefetch = [
                    m.Prefetch(
                        query=sparse_q, using=layout.sparse_field, limit=options.candidates, filter=flt, params=params
                    ),
                    m.Prefetch(
                        query=dense_q, using=layout.dense_field, limit=options.candidates, filter=flt, params=params
                    ),
                ]
                req = m.QueryRequest(
                    prefetch=prefetch,
                    query=fusion,
                    filter=flt,
                    limit=options.top_k,
                    with_payload=with_payload,
                    with_vector=False,
                )
            elif sparse_q is not None:
                req = m.QueryRequest(
                    query=sparse_q,
                    using=layout.sparse_field,
                    filter=flt,
                    params=params,
                    limit=options.top_k,
                    with_payload=with_payload,
                    with_vector=False,
                )
            else:
                req = m.QueryRequest(
                    query=dense_q,
                    using=layout.dense_field,
                    filter=flt,
                    params=params,
                    limit=options.top_k,
                    with_payload=with_payload,
                    with_vector=False,
                )
            requests.append(req)
        responses = self.call(
            "search", lambda: self.client.query_batch_points(collection_name=name, requests=requests)
        )[0]
        return [[(p.id, float(p.score), p.payload or {}) for p in r.points] for r in responses]

    def scroll(
        self, name: str, layout: Layout, offset: Any, limit: int
    ) -> tuple[list[tuple[dict[str, Any], list[int], list[float], list[float] | None]], Any]:
        """One page of points with payload and vectors (see ``EdgeBackend.scroll``)."""
        (records, next_offset), _ = self.call(
            "scroll",
            lambda: self.client.scroll(name, limit=int(limit), offset=offset, with_payload=True, with_vectors=True),
        )
        out = []
        for r in records:
            vectors = r.vector if isinstance(r.vector, dict) else {}
            sparse = vectors.get(layout.sparse_field)
            dense = vectors.get(layout.dense_field) if layout.dense_field else None
            out.append(
                (
                    dict(r.payload or {}),
                    list(sparse.indices) if sparse is not None else [],
                    list(sparse.values) if sparse is not None else [],
                    list(dense) if dense is not None else None,
                )
            )
        return out, next_offset


def _status_of(exc: ConnectorError) -> int | None:
    cause = exc.__cause__
    return describe_error(cause)[1] if cause is not None else None


def _distance_name(distance: Any) -> str:
    value = str(getattr(distance, "value", distance)).lower()
    return {"cosine": "cosine", "dot": "dot", "euclid": "euclid", "manhattan": "manhattan"}.get(value, value)


def _grpc_address(url: str, grpc_port: int | None) -> str:
    """The address the client dials with ``prefer_grpc``: the url's host on the gRPC port."""
    parts = urlsplit(url)
    host = parts.hostname or url
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or 'http'}://{host}:{grpc_port or 6334} (gRPC)"
