"""The ``elasticsearch`` connector: learned sparse vectors in an Elasticsearch ``sparse_vector`` field.

Works with the ``elasticsearch`` Python client 9.x (or 8.x) against Elasticsearch 8.11 and later,
including 9.x and serverless; older clusters are refused with a clear message when the connector
first connects.

Index: ``sparse_vector`` field keyed by token (``SparseVector.tokens`` -> weights), the text in a
``text`` field, the payload in an object whose ``IndexSpec.payload_fields`` are mapped with their
type, an optional ``dense_vector`` (``IndexSpec.dense_field``/``dense_size``; similarity from
``IndexSpec.options["dense_similarity"]``, default cosine), and ``IndexSpec.metadata`` in the mapping
``_meta``. ``IndexSpec.options`` may also set ``number_of_shards``, ``number_of_replicas``,
``refresh_interval`` and ``sparse_index_options`` (the field's ``index_options``, 8.19+/9.1+).

Pruning: from 8.19 and 9.1 on, a new ``sparse_vector`` field prunes query tokens by default
(``index_options.pruning_config``). The connector therefore creates the field with
``index_options: {"prune": false}`` on those versions unless ``sparse_index_options`` says
otherwise, and sends ``prune`` explicitly with every query, so a search is exact unless asked.

Token names with dots: ``sparse_vector`` accepts them from 8.16 on. An index created on an 8.11-8.15
cluster writes its keys with a reversible escape instead (``%`` -> ``%25``, then ``.`` -> ``%2E``;
see :func:`escape_token`), records that in ``_meta``, and queries are escaped the same way, also
after the cluster is upgraded.

Hybrid search (``IndexSpec.dense_field`` set: a ``dense_vector`` beside the ``sparse_vector``, one
index): a query with both vectors runs the sparse query and a ``knn`` search, each with the filter,
and fuses them as :class:`sparsebridge.connector.SearchOptions` defines. ``"rrf"`` goes to the
``rrf`` retriever (``rank_constant`` = ``rrf_k``, ``rank_window_size`` = the candidates; retrievers
are GA since 8.16), ``"linear"`` to the ``linear`` retriever with the ``minmax`` normalizer and the
weights (8.18+). Older clusters, ``"dbsf"`` (no Elasticsearch equivalent) and clusters whose licence
lacks the retriever (both need an Enterprise or trial licence on self-managed clusters) get the two
legs in the same ``_msearch`` and the fusion on the client, with a note in the result saying so.
A query with only a dense vector is a ``knn`` search.

Query: the ``sparse_vector`` query with ``query_vector``, exact by default (``prune: false``; since
9.1 a new field prunes query tokens unless told not to). ``SearchOptions.backend_options`` may set
``prune`` and ``pruning_config`` (a ``pruning_config`` alone turns pruning on); without them a query
prunes as the field's ``index_options`` say (so ``sparse_index_options = {prune = true, ...}`` in
``[backend.index_options]`` gives pruned searches), else it is exact. Clusters before 8.15
have no ``sparse_vector`` query: there the same exact score (sum of query weight x document weight
over shared tokens) comes from a ``bool`` of ``term`` queries, one per token, boosted by the query
weight, which is what ``sparse_vector`` itself builds. Filters go into a ``bool`` filter; a batch of
queries is one ``_msearch``.

Encoding in the engine (``sparsebridge register``, 8.19+ / 9.1+): two ``custom`` inference
endpoints call a running ``sparsebridge serve`` (see :mod:`.inference`), named
``<index>-sparsebridge-query`` / ``-document``; their ids go into the index's ``_meta``
(``engine_encoding``). A query that carries text is then a ``sparse_vector`` query with
``inference_id`` + ``query`` (a ``semantic`` query on a ``semantic_text`` field). On request,
``register`` also creates a new index whose field is ``semantic_text`` on the two endpoints:
documents written there with their text in that field are encoded by Elasticsearch at ingest.

Options (besides those of :class:`~sparsebridge_lucene_rest.LuceneConnector`):
``api_key`` (an encoded key or ``(id, key)``). Secrets never appear in reprs, logs or errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from sparsebridge.connector import (
    ENGINE_ENCODING_KEY,
    ConnectorError,
    IndexSpec,
    ModelServer,
    Query,
    Record,
    RecordColumns,
    SearchOptions,
)
from sparsebridge_lucene_rest import (
    META_FORMAT,
    META_KEY,
    TEXT_FIELD,
    Layout,
    LuceneConnector,
    OptionError,
    SearchPlan,
    combine,
    keyed_rows,
    missing_client,
)

from . import inference

MIN_VERSION = (8, 11)
SPARSE_VECTOR_QUERY_SINCE = (8, 15)
DOTTED_TOKENS_SINCE = (8, 16)
EXCLUDE_VECTORS_SINCE = (9, 1)
RRF_RETRIEVER_SINCE = (8, 16)  # retrievers GA
LINEAR_RETRIEVER_SINCE = (8, 18)
INDEX_OPTIONS_SINCE = (9, 1)  # and 8.19 on the 8.x line
MAX_NUM_CANDIDATES = 10_000
_LICENSE_RE = re.compile(r"\blicen[cs]e\b", re.IGNORECASE)

KEYS_PLAIN = "token"
KEYS_ESCAPED = "token-dot-escaped"


def escape_token(token: str) -> str:
    """Reversible escape for clusters whose ``sparse_vector`` rejects dots in feature names."""
    return token.replace("%", "%25").replace(".", "%2E")


def unescape_token(key: str) -> str:
    """A token key as written before 8.16 (dots escaped) back to the token."""
    return key.replace("%2E", ".").replace("%25", "%")


class ElasticsearchConnector(LuceneConnector):
    """Elasticsearch 8.11+ / 9.x: a ``sparse_vector`` field keyed by token, the ``sparse_vector`` query,
    hybrid through the ``rrf`` / ``linear`` retrievers (client-side fusion where the cluster lacks them)."""

    name: ClassVar[str] = "elasticsearch"
    description: ClassVar[str] = "Elasticsearch 8.11+ / 9.x: sparse_vector field and query"
    engine: ClassVar[str] = "Elasticsearch"
    extra_options: ClassVar[frozenset[str]] = frozenset({"api_key"})
    search_backend_options: ClassVar[frozenset[str]] = frozenset({"prune", "pruning_config"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        api_key = options.get("api_key")
        if api_key is not None and self.basic_auth is not None:
            raise ConnectorError("give one kind of credentials: api_key, or username/password (basic_auth)")
        if api_key is not None and not (
            isinstance(api_key, str) or (isinstance(api_key, (tuple, list)) and len(api_key) == 2)
        ):
            raise ConnectorError("api_key must be the encoded key (a string) or an (id, key) pair")
        self.api_key = tuple(api_key) if isinstance(api_key, list) else api_key

    # --- client -----------------------------------------------------------------------------------

    def _lib(self) -> Any:
        try:
            from . import _client
        except ImportError as err:
            raise missing_client(self.name, "elasticsearch", err) from None
        return _client

    def _check_server(self, client: Any, info: Mapping[str, Any]) -> None:
        version = info.get("version") or {}
        number = version.get("number", "?")
        if version.get("distribution") == "opensearch":
            raise ConnectorError(f"{self.url} is OpenSearch {number}, not Elasticsearch: use the opensearch connector")
        if self._serverless:
            return
        if self._server_version < MIN_VERSION:
            raise ConnectorError(
                f"Elasticsearch {number} at {self.url} is too old: the elasticsearch connector needs "
                f"8.11 or later (the sparse_vector field type); upgrade the cluster"
            )

    @property
    def _serverless(self) -> bool:
        return (self._server_info.get("version") or {}).get("build_flavor") == "serverless"

    def _has(self, since: tuple[int, int]) -> bool:
        return self._serverless or self.server_version >= since

    # --- mapping ----------------------------------------------------------------------------------

    def _has_index_options(self) -> bool:
        """``sparse_vector`` ``index_options`` exist in 8.19+ and 9.1+ (not in 9.0)."""
        if self._serverless:
            return True
        v = self.server_version
        return (8, 19) <= v < (9, 0) or v >= INDEX_OPTIONS_SINCE

    def _sparse_property(self, spec: IndexSpec) -> tuple[dict[str, Any], str]:
        prop: dict[str, Any] = {"type": "sparse_vector"}
        given = spec.options.get("sparse_index_options")
        if given is not None:
            if not self._has_index_options():
                raise OptionError(
                    f"sparse_index_options need Elasticsearch 8.19+ or 9.1+ (this cluster is "
                    f"{'.'.join(map(str, self.server_version))})"
                )
            prop["index_options"] = dict(given)
        elif self._has_index_options():
            # Where the field has index options, a new field prunes query tokens by default; the
            # scores this connector promises are exact unless the config asks for pruning.
            prop["index_options"] = {"prune": False}
        return prop, KEYS_PLAIN if self._has(DOTTED_TOKENS_SINCE) else KEYS_ESCAPED

    def _accepted_sparse_types(self) -> tuple[str, ...]:
        # semantic_text: an index made by `register --semantic-index`, searched with query text only.
        return ("sparse_vector", "semantic_text")

    def _default_keys(self, sparse_type: str) -> str:
        return KEYS_PLAIN

    def _dense_property(self, spec: IndexSpec) -> dict[str, Any]:
        return {
            "type": "dense_vector",
            "dims": spec.dense_size,
            "index": True,
            "similarity": spec.options.get("dense_similarity", "cosine"),
        }

    def _dense_dims(self, prop: Mapping[str, Any]) -> int | None:
        return prop.get("dims") if prop.get("type") == "dense_vector" else None

    # --- documents and queries --------------------------------------------------------------------

    @staticmethod
    def _keyed(layout: Layout, tokens: tuple[str, ...], values: tuple[float, ...]) -> dict[str, float]:
        escape = layout.sparse_keys == KEYS_ESCAPED
        out: dict[str, float] = {}
        for tok, w in zip(tokens, values):
            key = escape_token(tok) if escape else tok
            # Two ids with the same token string: keep the larger weight, as the engine would.
            out[key] = max(float(w), out.get(key, 0.0))
        return out

    def _encode_sparse(self, layout: Layout, record: Record) -> dict[str, float]:
        return self._keyed(layout, record.sparse.tokens, record.sparse.values)

    def _encode_sparse_columns(self, layout: Layout, columns: RecordColumns) -> list[dict[str, float]]:
        offsets, _, values = columns.flat_lists()
        tokens = self._escaped(columns.tokens) if layout.sparse_keys == KEYS_ESCAPED else columns.tokens
        return keyed_rows(offsets, tokens[columns.indices].tolist(), values)

    def _escaped(self, tokens: Any) -> Any:
        """The vocabulary's tokens escaped (:func:`escape_token`), once per vocabulary array."""
        cached = getattr(self, "_escaped_tokens", None)
        if cached is None or cached[0] is not tokens:
            cached = (tokens, tokens.copy())
            cached[1][:] = [escape_token(t) for t in tokens.tolist()]
            self._escaped_tokens = cached
        return cached[1]

    def _sparse_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        assert query.sparse is not None
        vector = self._keyed(layout, query.sparse.tokens, query.sparse.values)
        backend = options.backend_options
        notes: list[str] = []
        if self._has(SPARSE_VECTOR_QUERY_SINCE):
            inner: dict[str, Any] = {"field": layout.sparse_field, "query_vector": vector}
            prune, config = self._query_pruning(layout, backend)
            inner["prune"] = prune
            if prune and config is not None:
                inner["pruning_config"] = config
            clause: dict[str, Any] = {"sparse_vector": inner}
        else:
            if backend.get("prune") or backend.get("pruning_config"):
                notes.append(
                    f"token pruning needs Elasticsearch 8.15+ (this cluster is "
                    f"{'.'.join(map(str, self.server_version))}); the query ran exact"
                )
            clause = {
                "bool": {
                    "should": [{"term": {layout.sparse_field: {"value": key, "boost": w}}} for key, w in vector.items()]
                }
            }
        return combine(clause, filters), 1.0, notes

    def _text_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        assert query.text is not None
        if layout.sparse_type == "semantic_text":
            # The field names its own search endpoint.
            return combine({"semantic": {"field": layout.sparse_field, "query": query.text}}, filters), 1.0, []
        inner: dict[str, Any] = {
            "field": layout.sparse_field,
            "inference_id": self._engine_model(layout, "query"),
            "query": query.text,
        }
        prune, config = self._query_pruning(layout, options.backend_options)
        inner["prune"] = prune
        if prune and config is not None:
            inner["pruning_config"] = config
        return combine({"sparse_vector": inner}, filters), 1.0, []

    # --- sparsebridge register ---------------------------------------------------------------------

    def _register(self, server: ModelServer, layout: Layout) -> dict[str, str]:
        if not self._has_index_options():  # the custom service came with 8.19 and 9.1
            version = ".".join(map(str, self.server_version))
            raise ConnectorError(
                f"Elasticsearch {version} at {self.url} has no custom inference service (8.19+ or 9.1+); "
                f'upgrade, or keep [search] query_encoding = "client"'
            )
        created: dict[str, str] = {}
        for side in ("query", "document"):
            inference_id = inference.endpoint_id(layout.index, side)
            body = inference.inference_endpoint(server, side)
            with self._api(f"create inference endpoint {inference_id!r}"):
                if self._endpoint_exists(inference_id):
                    self.client.inference.delete(inference_id=inference_id, task_type=inference.TASK_TYPE)
                self.client.inference.put_custom(
                    task_type=inference.TASK_TYPE, custom_inference_id=inference_id, **body
                )
            created[side] = inference_id
        if server.semantic_index:
            self._create_semantic_index(server.semantic_index, layout, created)
            created["semantic_index"] = server.semantic_index
        return created

    def _endpoint_exists(self, inference_id: str) -> bool:
        try:
            self.client.inference.get(task_type=inference.TASK_TYPE, inference_id=inference_id)
        except Exception as exc:
            if self._status_of(exc) == 404:
                return False
            raise
        return True

    def _create_semantic_index(self, name: str, layout: Layout, ids: dict[str, str]) -> None:
        """A new index like ``layout``'s, its sparse field ``semantic_text`` on the endpoints."""
        meta = {k: v for k, v in layout.metadata.items() if k != ENGINE_ENCODING_KEY}
        meta[ENGINE_ENCODING_KEY] = {"query": ids["query"], "document": ids["document"]}
        meta[META_KEY] = {
            "format": META_FORMAT,
            "sparse_field": layout.sparse_field,
            "sparse_keys": KEYS_PLAIN,
            "dense_field": None,
        }
        properties = {
            TEXT_FIELD: {"type": "text"},
            layout.sparse_field: inference.semantic_text_property(ids["document"], ids["query"]),
            "payload": {
                "type": "object",
                "dynamic": "false",
                "properties": {k: {"type": t} for k, t in layout.payload_fields.items()},
            },
        }
        body = {"mappings": {"dynamic": "false", "_meta": meta, "properties": properties}}
        with self._api(f"create semantic_text index {name!r}"):
            self._call_create(name, body)

    @staticmethod
    def _query_pruning(layout: Layout, backend: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """The ``prune`` and ``pruning_config`` a query sends: the search options' if they set
        them, else what the field's ``index_options`` say (the index was created to prune when the
        config asked for it), else exact. Sent explicitly either way, so the engine's default
        (which prunes new fields since 8.19/9.1) never decides."""
        if "prune" in backend or "pruning_config" in backend:
            prune = bool(backend.get("prune", "pruning_config" in backend))
            config = backend.get("pruning_config")
        else:
            field_options = layout.sparse_mapping.get("index_options") or {}
            prune = bool(field_options.get("prune", False))
            config = field_options.get("pruning_config")
        return prune, (dict(config) if prune and config is not None else None)

    # --- hybrid ----------------------------------------------------------------------------------

    def _dense_clause(
        self, layout: Layout, dense: list[float], filters: list[dict[str, Any]], k: int
    ) -> dict[str, Any]:
        # The fields a knn search and a knn retriever share; the filter runs inside the kNN search,
        # before its top-k cut.
        clause: dict[str, Any] = {
            "field": layout.dense_field,
            "query_vector": dense,
            "k": k,
            "num_candidates": min(MAX_NUM_CANDIDATES, max(k, math.ceil(1.5 * k))),
        }
        if filters:
            clause["filter"] = filters
        return clause

    def _dense_body(self, layout: Layout, clause: dict[str, Any], size: int) -> dict[str, Any]:
        return {"size": size, "knn": clause, "track_total_hits": False}

    def _hybrid_plan(
        self, layout: Layout, sparse: dict[str, Any], dense: dict[str, Any], options: SearchOptions
    ) -> SearchPlan | None:
        window = max(options.candidates, options.top_k)  # the retrievers need rank_window_size >= size
        legs = [{"standard": {"query": sparse}}, {"knn": dense}]
        if options.fusion == "rrf" and self._has(RRF_RETRIEVER_SINCE):
            retriever: dict[str, Any] = {
                "rrf": {"retrievers": legs, "rank_constant": options.rrf_k, "rank_window_size": window}
            }
        elif options.fusion == "linear" and self._has(LINEAR_RETRIEVER_SINCE):
            weights = options.normalized_weights
            retriever = {
                "linear": {
                    "retrievers": [
                        {"retriever": leg, "weight": w, "normalizer": "minmax"} for leg, w in zip(legs, weights)
                    ],
                    "rank_window_size": window,
                }
            }
        else:
            return None
        body = {"size": options.top_k, "retriever": retriever, "_source": self._source_filter(options)}
        return SearchPlan(bodies=[body])

    def _client_side_plan(self, layout, sparse, scale, dense, options, notes):  # type: ignore[override]
        plan = super()._client_side_plan(layout, sparse, scale, dense, options, notes)
        version = "serverless" if self._serverless else ".".join(map(str, self.server_version))
        if options.fusion == "dbsf":
            plan.notes.append("fusion 'dbsf' has no Elasticsearch retriever: the legs were fused on the client")
        elif options.fusion == "rrf" and not self._has(RRF_RETRIEVER_SINCE):
            plan.notes.append(
                f"Elasticsearch {version} has no rrf retriever (8.16+): the legs were fused on the client"
            )
        elif options.fusion == "linear" and not self._has(LINEAR_RETRIEVER_SINCE):
            plan.notes.append(
                f"Elasticsearch {version} has no linear retriever (8.18+): the legs were fused on the client"
            )
        return plan

    def _fallback_reason(self, error: Any, status: int | None) -> str | None:
        reason = str(error.get("reason", "")) if isinstance(error, Mapping) else str(error)
        if status == 403 and _LICENSE_RE.search(reason):
            return f"the cluster's licence does not include this retriever ({reason})"
        return None

    # --- client calls -----------------------------------------------------------------------------

    def _call_exists(self, index: str) -> bool:
        return bool(self.client.indices.exists(index=index))

    def _call_create(self, index: str, body: dict[str, Any]) -> None:
        self.client.indices.create(index=index, **body)

    def _call_get_mapping(self, index: str) -> dict[str, Any]:
        return dict(self.client.indices.get_mapping(index=index).body)

    def _call_put_mapping(self, index: str, properties: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, properties=properties)

    def _call_put_meta(self, index: str, meta: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, meta=meta)

    def _call_msearch(self, index: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.client.msearch(searches=lines).body)

    def _call_mget(self, index: str, ids: list[str]) -> dict[str, Any]:
        return dict(self.client.mget(index=index, ids=ids).body)

    def _call_count(self, index: str) -> int:
        return int(self.client.count(index=index)["count"])

    def _call_refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index)

    def _call_delete_index(self, index: str) -> None:
        self.client.indices.delete(index=index)

    # --- export -----------------------------------------------------------------------------------

    def _export_source(self) -> Any:
        # 9.1+ can leave vectors out of _source (index.mapping.exclude_source_vectors, the default
        # for new indices from 9.2 and on serverless): ask for them explicitly.
        return {"exclude_vectors": False} if self._has(EXCLUDE_VECTORS_SINCE) else True

    def _decode_sparse(self, layout: Layout, stored: Mapping[str, Any], index_of: Mapping[str, int]) -> list[str]:
        if layout.sparse_keys == KEYS_ESCAPED:
            return [unescape_token(str(k)) for k in stored]
        return [str(k) for k in stored]
