"""The ``opensearch`` connector: learned sparse vectors in OpenSearch, searched with ``neural_sparse``.

Needs ``opensearch-py`` and an OpenSearch 2.14+ cluster with the neural-search plugin (part of the
default distribution) for ``neural_sparse`` with raw ``query_tokens``.

Two sparse field types (connector option ``sparse_field_type``):

``"rank_features"`` (default)
    Keys are the tokens (``SparseVector.tokens``). ``neural_sparse`` with ``query_tokens`` scores
    the exact dot product over shared tokens (document weights are stored by Lucene with 9
    significant bits). Lucene takes query weights only in (0, 64]: a query whose largest weight
    exceeds 64 is scaled down to fit, which leaves the ranking unchanged; the scores are scaled back
    and ``SearchResult.notes`` says so.
``"sparse_vector"`` (OpenSearch 3.3+)
    The SEISMIC approximate index: keys are token ids as strings (``SparseVector.indices``), the
    index gets ``index.sparse: true``, and the field's ``method`` is ``seismic`` with the parameters
    ``n_postings``, ``cluster_ratio``, ``summary_prune_ratio``, ``approximate_threshold``,
    ``quantization_ceiling_search``, ``quantization_ceiling_ingest`` taken from
    ``IndexSpec.options`` or the connector options of those names (the spec wins). Queries take
    ``SearchOptions.backend_options`` ``top_n`` (query tokens kept; default: all of them),
    ``heap_factor`` and ``k`` (default ``top_k``); filters go into ``method_parameters.filter``
    so they apply before the top-k cut.

    Quantization: SEISMIC stores weights in 8 bits over ``[0, quantization_ceiling_ingest]``
    (default 3) and clips what lies above, while SPLADE weights often exceed 3. Unless the ceilings
    are configured, the connector creates a new SEISMIC index at its first write, with
    ``quantization_ceiling_ingest`` derived from the largest weight of that batch (20% above it,
    rounded up to two significant digits) and ``quantization_ceiling_search`` the larger of that
    and OpenSearch's default 16. The ceilings (and where they came from) are recorded in the
    index's ``_meta`` under ``seismic_quantization``, so ``index_metadata()`` reports them; a
    later write or query with weights above its ceiling gets a note (``WriteResult.notes``,
    ``SearchResult.notes``) and a warning in the log saying how many weights were clipped.

Dense vectors (``IndexSpec.dense_field``) are stored in a ``knn_vector`` field (``index.knn: true``,
HNSW on the Lucene engine, ``space_type`` from ``IndexSpec.options["dense_similarity"]``: cosine by
default, or ``dot_product`` / ``l2_norm``). A query with only a dense vector is a ``knn`` query; one
with both is a ``hybrid`` query of the sparse query and the ``knn`` query, each with the filter,
fused by a search pipeline the connector puts in place (``PUT /_search/pipeline/sparsebridge-...``,
named after its parameters) as :class:`sparsebridge.connector.SearchOptions` defines:
``"linear"`` by the ``normalization-processor`` (``min_max`` + ``arithmetic_mean`` with the
weights), ``"rrf"`` by the ``score-ranker-processor`` (``rank_constant`` = ``rrf_k``, 2.19+). The
hybrid query returns the candidates of each leg, fused, and the connector keeps the ``top_k`` best.
``_msearch`` takes no per-search pipeline, so each hybrid query is one ``_search`` with
``search_pipeline``. ``"dbsf"`` and RRF before 2.19 run the two legs in one ``_msearch`` and fuse
them on the client, with a note in the result.

Encoding in the engine (``sparsebridge register``; see :mod:`.ml`): per side an ML connector to a
running ``sparsebridge serve`` and a remote model registered and deployed on it (the deploy task is
polled until it completes), then a ``sparse_encoding`` ingest pipeline on the document model, set as
the index's ``default_pipeline`` (documents written without vectors are encoded by OpenSearch). The
model ids go into the index's ``_meta`` (``engine_encoding``); a query that carries text is then a
``neural_sparse`` query with ``query_text`` + ``model_id``. rank_features indexes only (SEISMIC
fields are keyed by token id, which the model's token map is not).

Options besides the common ones: ``sparse_field_type`` and the SEISMIC
parameters. OpenSearch has no API keys: use ``username``/``password`` (or ``basic_auth``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sparsebridge.connector import (
    ConnectorError,
    IndexSpec,
    ModelServer,
    Query,
    Record,
    RecordColumns,
    SearchOptions,
    WriteResult,
)
from sparsebridge_lucene_rest import (
    TEXT_FIELD,
    Layout,
    LuceneConnector,
    OptionError,
    SearchPlan,
    combine,
    keyed_rows,
    missing_client,
)

from . import ml

MIN_VERSION = (2, 14)
SEISMIC_SINCE = (3, 3)
SCORE_RANKER_SINCE = (2, 19)  # RRF in a search pipeline
DEPLOY_TIMEOUT = 120.0  # seconds a remote model's deploy task may take before register gives up
DEPLOY_POLL = 0.5
PIPELINE_PREFIX = "sparsebridge-hybrid-"
QUANTIZATION_META = "seismic_quantization"
DEFAULT_CEILING_INGEST = 3.0  # OpenSearch's defaults for SEISMIC
DEFAULT_CEILING_SEARCH = 16.0
CEILING_HEADROOM = 1.2

log = logging.getLogger("sparsebridge.opensearch")


def derive_ceiling(max_weight: float) -> float:
    """A ``quantization_ceiling_ingest`` for weights up to ``max_weight``: 20% above it, rounded
    up to two significant digits (so it reads well in a mapping), never below 0.01."""
    target = max(float(max_weight) * CEILING_HEADROOM, 0.01)
    step = 10 ** (math.floor(math.log10(target)) - 1)
    return round(math.ceil(target / step - 1e-9) * step, 10)


# IndexSpec.options["dense_similarity"] (the Elasticsearch names) -> knn_vector space_type
SPACE_TYPES = {"cosine": "cosinesimil", "dot_product": "innerproduct", "l2_norm": "l2"}
MAX_QUERY_WEIGHT = 64.0  # Lucene FeatureField linear queries take weights in (0, 64]
NEURAL_PLUGIN = "opensearch-neural-search"

KEYS_TOKEN = "token"
KEYS_INDEX = "index"
FIELD_TYPES = ("rank_features", "sparse_vector")


def _in(lo: float, hi: float, lo_open: bool, hi_open: bool):
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return check


def _int_in(lo: int, lo_open: bool):
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and (v > lo if lo_open else v >= lo)

    return check


# SEISMIC method parameters and their documented ranges (OpenSearch "Sparse vector" field type).
SEISMIC_PARAMETERS: dict[str, tuple[Any, str]] = {
    "n_postings": (_int_in(0, True), "an integer > 0"),
    "cluster_ratio": (_in(0, 1, True, True), "a number in (0, 1)"),
    "summary_prune_ratio": (_in(0, 1, True, False), "a number in (0, 1]"),
    "approximate_threshold": (_int_in(0, False), "an integer >= 0"),
    "quantization_ceiling_search": (_in(0, math.inf, True, True), "a number > 0"),
    "quantization_ceiling_ingest": (_in(0, math.inf, True, True), "a number > 0"),
}
SEISMIC_QUERY_PARAMETERS = ("top_n", "heap_factor", "k")


class OpenSearchConnector(LuceneConnector):
    """OpenSearch 2.14+: ``rank_features`` (or the 3.3+ SEISMIC ``sparse_vector``) and the
    ``neural_sparse`` query; hybrid through a search pipeline the connector puts in place."""

    name: ClassVar[str] = "opensearch"
    description: ClassVar[str] = "OpenSearch 2.14+: rank_features + neural_sparse, or SEISMIC sparse_vector (3.3+)"
    engine: ClassVar[str] = "OpenSearch"
    extra_options: ClassVar[frozenset[str]] = frozenset({"sparse_field_type", *SEISMIC_PARAMETERS})
    search_backend_options: ClassVar[frozenset[str]] = frozenset(SEISMIC_QUERY_PARAMETERS)

    def __init__(self, **options: Any) -> None:
        if options.get("api_key") is not None:
            raise OptionError("OpenSearch has no API keys: use username/password (or basic_auth)")
        options = {k: v for k, v in options.items() if not (k == "api_key" and v is None)}
        super().__init__(**options)
        self.sparse_field_type = options.get("sparse_field_type", "rank_features")
        if self.sparse_field_type not in FIELD_TYPES:
            raise OptionError(
                f"sparse_field_type must be one of {', '.join(FIELD_TYPES)}, got {self.sparse_field_type!r}"
            )
        self.seismic_defaults = {k: options[k] for k in SEISMIC_PARAMETERS if k in options}
        self._check_seismic(self.seismic_defaults)
        self._pipelines: set[str] = set()  # search pipelines put in place by this connector
        self._pending: IndexSpec | None = None  # a SEISMIC index waiting for its first batch
        self._derived: dict[str, Any] = {}  # ceilings derived from the first batch
        self._ceilings: tuple[float, float] | None = None  # (ingest, search) of the current index

    @staticmethod
    def _check_seismic(params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            check, wanted = SEISMIC_PARAMETERS[key]
            if not check(value):
                raise OptionError(f"SEISMIC parameter {key} must be {wanted}, got {value!r}")

    # --- client -----------------------------------------------------------------------------------

    def _lib(self) -> Any:
        try:
            from . import _client
        except ImportError as err:
            raise missing_client(self.name, "opensearch-py", err) from None
        return _client

    def _check_server(self, client: Any, info: Mapping[str, Any]) -> None:
        version = info.get("version") or {}
        number = version.get("number", "?")
        if version.get("distribution") != "opensearch":
            raise ConnectorError(
                f"{self.url} is not OpenSearch (version {number}, no 'distribution: opensearch'); "
                f"for Elasticsearch use the elasticsearch connector"
            )
        assert self._server_version is not None
        if self._server_version < MIN_VERSION:
            raise ConnectorError(
                f"OpenSearch {number} at {self.url} is too old: the opensearch connector needs 2.14 or "
                f"later (neural_sparse with raw query_tokens)"
            )
        if self.sparse_field_type == "sparse_vector" and self._server_version < SEISMIC_SINCE:
            raise ConnectorError(
                f"OpenSearch {number} at {self.url} has no SEISMIC sparse_vector field (3.3+); use "
                f"sparse_field_type='rank_features' or upgrade"
            )
        with self._api("list plugins"):
            plugins = self._lib().installed_plugins(client)
        if plugins is not None and NEURAL_PLUGIN not in plugins:
            raise ConnectorError(
                f"OpenSearch at {self.url} has no neural-search plugin ({NEURAL_PLUGIN}), which provides "
                f"the neural_sparse query; use the default OpenSearch distribution or install the plugin"
            )

    # --- mapping ----------------------------------------------------------------------------------

    def _seismic_parameters(self, spec: IndexSpec) -> dict[str, Any]:
        params = dict(self.seismic_defaults)
        params.update({k: v for k, v in spec.options.items() if k in SEISMIC_PARAMETERS})
        self._check_seismic(params)
        for key in ("quantization_ceiling_ingest", "quantization_ceiling_search"):
            if key not in params and key in self._derived:
                params[key] = self._derived[key]
        return params

    # --- SEISMIC quantization ceilings --------------------------------------------------------------

    def _ceilings_configured(self, spec: IndexSpec) -> bool:
        given = {**self.seismic_defaults, **spec.options}
        return "quantization_ceiling_ingest" in given

    def ensure_index(self, spec: IndexSpec) -> None:
        self._derived = {}
        if self.sparse_field_type == "sparse_vector" and not self._ceilings_configured(spec):
            self._check_spec_names(spec)
            with self._api(f"check index {spec.name!r}"):
                exists = self._call_exists(spec.name)
            if not exists:
                # Created at the first write, with ceilings that fit the weights actually ingested.
                _, layout = self.create_body(spec)
                self._index, self._spec, self._layout, self._pending = spec.name, spec, layout, spec
                self._ceilings = None
                return
        self._pending = None
        super().ensure_index(spec)
        self._ceilings = None

    def create_body(self, spec: IndexSpec) -> tuple[dict[str, Any], Layout]:
        body, layout = super().create_body(spec)
        if self.sparse_field_type == "sparse_vector":
            params = self._seismic_parameters(spec)
            record = {
                "quantization_ceiling_ingest": params.get("quantization_ceiling_ingest", DEFAULT_CEILING_INGEST),
                "quantization_ceiling_search": params.get("quantization_ceiling_search", DEFAULT_CEILING_SEARCH),
                "source": self._derived.get("source", "configured" if self._ceilings_configured(spec) else "default"),
            }
            if "max_weight" in self._derived:
                record["max_weight_seen"] = self._derived["max_weight"]
            body["mappings"]["_meta"][QUANTIZATION_META] = record
        return body, layout

    def _derive_from(self, records: Sequence[Record]) -> None:
        top = max((max(r.sparse.values) for r in records if len(r.sparse)), default=DEFAULT_CEILING_INGEST)
        ingest = derive_ceiling(top)
        self._derived = {
            "quantization_ceiling_ingest": ingest,
            "quantization_ceiling_search": max(ingest, DEFAULT_CEILING_SEARCH),
            "max_weight": round(float(top), 6),
            "source": f"derived from the largest weight of the first {len(records)} records",
        }

    def current_ceilings(self) -> tuple[float, float] | None:
        """(quantization_ceiling_ingest, quantization_ceiling_search) of the selected SEISMIC index,
        read from its mapping (OpenSearch's defaults where the mapping leaves them out); None for
        a rank_features index or one not created yet."""
        if self._ceilings is None and self._pending is None:
            layout = self._current()
            if layout.sparse_type != "sparse_vector":
                return None
            mapping = self._mapping_of(layout.index) or {}
            prop = (mapping.get("properties") or {}).get(layout.sparse_field) or {}
            params = (prop.get("method") or {}).get("parameters") or {}
            self._ceilings = (
                float(params.get("quantization_ceiling_ingest", DEFAULT_CEILING_INGEST)),
                float(params.get("quantization_ceiling_search", DEFAULT_CEILING_SEARCH)),
            )
        return self._ceilings

    def write(self, records: Sequence[Record]) -> WriteResult:
        if self._pending is not None and records:
            spec = self._pending
            self._derive_from(records)
            self._pending = None
            super().ensure_index(spec)
            log.info(
                "index %r: SEISMIC quantization_ceiling_ingest %s, quantization_ceiling_search %s "
                "(%s; largest weight %s)",
                spec.name,
                self._derived["quantization_ceiling_ingest"],
                self._derived["quantization_ceiling_search"],
                self._derived["source"],
                self._derived["max_weight"],
            )
        result = super().write(records)
        if records:
            self._note_clipped(result, lambda ceiling: sum(1 for r in records for w in r.sparse.values if w > ceiling))
        return result

    def write_columns(self, columns: RecordColumns) -> WriteResult:
        if self._pending is not None:  # the index is created from the first batch's weights: see write
            return self.write(columns.records())
        result = super().write_columns(columns)
        if len(columns):
            self._note_clipped(result, lambda ceiling: int((columns.values > ceiling).sum()))
        return result

    def _note_clipped(self, result: WriteResult, count_above: Any) -> None:
        """Say so when the batch had weights above the SEISMIC ingest ceiling (``count_above(ceiling)``)."""
        ceilings = self.current_ceilings()
        if ceilings is None:
            return
        clipped = count_above(ceilings[0])
        if clipped:
            # One wording per ceiling, so an ingest of many batches reports it once; the
            # count of each batch goes to the log.
            note = (
                f"weights above the index's SEISMIC quantization_ceiling_ingest {ceilings[0]:g} were "
                f"clipped to it by OpenSearch; re-create the index with a higher ceiling to keep them"
            )
            log.warning(
                "index %r: %d weight(s) of this batch: %s",
                self._layout.index if self._layout else self._index,
                clipped,
                note,
            )
            result.notes.append(note)

    def index_metadata(self) -> dict[str, Any] | None:
        if self._pending is not None:
            return None
        return super().index_metadata()

    def _sparse_property(self, spec: IndexSpec) -> tuple[dict[str, Any], str]:
        if self.sparse_field_type == "rank_features":
            return {"type": "rank_features"}, KEYS_TOKEN
        method: dict[str, Any] = {"name": "seismic"}
        params = self._seismic_parameters(spec)
        if params:
            method["parameters"] = params
        return {"type": "sparse_vector", "method": method}, KEYS_INDEX

    def _index_settings(self, spec: IndexSpec) -> dict[str, Any]:
        index = super()._index_settings(spec)
        if self.sparse_field_type == "sparse_vector":
            index["sparse"] = True
        if spec.dense_field:
            index["knn"] = True
        return {"index": index} if index else {}

    def _accepted_sparse_types(self) -> tuple[str, ...]:
        return (self.sparse_field_type,)

    def _default_keys(self, sparse_type: str) -> str:
        return KEYS_INDEX if sparse_type == "sparse_vector" else KEYS_TOKEN

    def _dense_property(self, spec: IndexSpec) -> dict[str, Any]:
        similarity = spec.options.get("dense_similarity", "cosine")
        if similarity not in SPACE_TYPES:
            raise OptionError(
                f"dense_similarity must be one of {', '.join(SPACE_TYPES)} on OpenSearch, got {similarity!r}"
            )
        return {
            "type": "knn_vector",
            "dimension": spec.dense_size,
            "method": {"name": "hnsw", "space_type": SPACE_TYPES[similarity], "engine": "lucene"},
        }

    def _dense_dims(self, prop: Mapping[str, Any]) -> int | None:
        return prop.get("dimension") if prop.get("type") == "knn_vector" else None

    # --- documents and queries --------------------------------------------------------------------

    @staticmethod
    def _keyed(layout: Layout, sparse: Any) -> dict[str, float]:
        if layout.sparse_keys == KEYS_INDEX:
            return {str(i): float(w) for i, w in zip(sparse.indices, sparse.values)}
        out: dict[str, float] = {}
        for tok, w in zip(sparse.tokens, sparse.values):
            out[tok] = max(float(w), out.get(tok, 0.0))  # same token for two ids: keep the larger
        return out

    def _encode_sparse(self, layout: Layout, record: Record) -> dict[str, float]:
        return self._keyed(layout, record.sparse)

    def _encode_sparse_columns(self, layout: Layout, columns: RecordColumns) -> list[dict[str, float]]:
        offsets, indices, values = columns.flat_lists()
        if layout.sparse_keys == KEYS_INDEX:
            return keyed_rows(offsets, [str(i) for i in indices], values)
        keys = columns.tokens[columns.indices].tolist()
        return keyed_rows(offsets, keys, values)

    def _sparse_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        assert query.sparse is not None
        tokens = self._keyed(layout, query.sparse)
        notes: list[str] = []
        scale = 1.0
        top = max(tokens.values())
        if top > MAX_QUERY_WEIGHT:
            scale = MAX_QUERY_WEIGHT / top
            tokens = {k: min(MAX_QUERY_WEIGHT, w * scale) for k, w in tokens.items()}
            notes.append(
                f"query weights rescaled by {scale:.6g} (largest {top:.6g} > {MAX_QUERY_WEIGHT:g}, the most "
                f"OpenSearch accepts); ranking unchanged, scores scaled back"
            )
        inner: dict[str, Any] = {"query_tokens": tokens}
        backend = options.backend_options
        if layout.sparse_type == "sparse_vector":
            ceilings = self.current_ceilings()
            if ceilings is not None:
                clipped = sum(1 for w in tokens.values() if w > ceilings[1])
                if clipped:
                    notes.append(
                        f"{clipped} query weight(s) above the index's SEISMIC quantization_ceiling_search "
                        f"{ceilings[1]:g} were clipped to it by OpenSearch"
                    )
            params: dict[str, Any] = {
                "top_n": int(backend.get("top_n", len(tokens))),
                "k": int(backend.get("k", options.top_k)),
            }
            if "heap_factor" in backend:
                params["heap_factor"] = float(backend["heap_factor"])
            if filters:
                params["filter"] = {"bool": {"filter": filters}}
            inner["method_parameters"] = params
            return {"neural_sparse": {layout.sparse_field: inner}}, scale, notes
        if backend:
            raise OptionError(
                f"search options {', '.join(sorted(backend))} apply to SEISMIC sparse_vector fields only; "
                f"index {layout.index!r} uses rank_features"
            )
        return combine({"neural_sparse": {layout.sparse_field: inner}}, filters), scale, notes

    def _text_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        assert query.text is not None
        if layout.sparse_type != "rank_features" or options.backend_options:
            raise OptionError(
                f"query text (query_encoding = 'engine') works on rank_features indexes without search "
                f"options; index {layout.index!r} has a {layout.sparse_type} field"
            )
        inner = {"query_text": query.text, "model_id": self._engine_model(layout, "query")}
        return combine({"neural_sparse": {layout.sparse_field: inner}}, filters), 1.0, []

    # --- sparsebridge register ---------------------------------------------------------------------

    def _register(self, server: ModelServer, layout: Layout) -> dict[str, str]:
        if layout.sparse_type != "rank_features":
            raise OptionError(
                f"register works on rank_features indexes; index {layout.index!r} has a SEISMIC "
                f"{layout.sparse_type} field, keyed by token id"
            )
        if server.semantic_index:
            raise OptionError(
                "semantic_text indexes are Elasticsearch's; OpenSearch encodes through an ingest pipeline"
            )
        created: dict[str, str] = {}
        ml_api = self.client.plugins.ml
        for side in ("query", "document"):
            name = ml.model_name(layout.index, side)
            with self._api(f"create the ML connector of model {name!r}"):
                connector_id = ml_api.create_connector(body=ml.ml_connector(server, side))["connector_id"]
            with self._api(f"register model {name!r}"):
                answer = ml_api.register_model(body=ml.remote_model(name, connector_id, side))
            model_id = answer.get("model_id") or self._await_task(answer["task_id"], f"register model {name!r}")
            with self._api(f"deploy model {name!r}"):
                task = ml_api.deploy_model(model_id=model_id)["task_id"]
            self._await_task(task, f"deploy model {name!r}")
            created[side] = model_id
            created[f"{side}_connector"] = connector_id
        pipeline = ml.pipeline_name(layout.index)
        with self._api(f"put ingest pipeline {pipeline!r}"):
            self.client.ingest.put_pipeline(
                id=pipeline, body=ml.ingest_pipeline(created["document"], layout.sparse_field, TEXT_FIELD)
            )
        with self._api(f"set the default pipeline of index {layout.index!r}"):
            self.client.indices.put_settings(index=layout.index, body={"index": {"default_pipeline": pipeline}})
        created["ingest_pipeline"] = pipeline
        return created

    def _await_task(self, task_id: str, action: str) -> str:
        """Poll an ML task until it completes; its model id. A failed or stuck task is an error."""
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        while True:
            with self._api(f"{action}: read task {task_id!r}"):
                task = self.client.plugins.ml.get_task(task_id=task_id)
            state = task.get("state")
            if state == "COMPLETED":
                return str(task.get("model_id") or "")
            if state in ("FAILED", "COMPLETED_WITH_ERROR", "CANCELLED", "EXPIRED"):
                raise ConnectorError(f"OpenSearch at {self.url}: {action}: task {task_id} {state}: {task.get('error')}")
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"OpenSearch at {self.url}: {action}: task {task_id} still {state} after {DEPLOY_TIMEOUT:g} s"
                )
            time.sleep(DEPLOY_POLL)

    # --- hybrid ----------------------------------------------------------------------------------

    def _dense_clause(
        self, layout: Layout, dense: list[float], filters: list[dict[str, Any]], k: int
    ) -> dict[str, Any]:
        inner: dict[str, Any] = {"vector": dense, "k": k}
        if filters:  # inside the knn query, so it holds before the top-k cut
            inner["filter"] = {"bool": {"filter": filters}}
        return {"knn": {layout.dense_field: inner}}

    def _dense_body(self, layout: Layout, clause: dict[str, Any], size: int) -> dict[str, Any]:
        return {"size": size, "query": clause, "track_total_hits": False}

    def search_pipeline(self, options: SearchOptions) -> tuple[str, dict[str, Any]] | None:
        """(name, body) of the search pipeline that fuses a hybrid query as ``options`` asks, or
        None when this cluster cannot (then the legs are fused on the client)."""
        if options.fusion == "linear":
            processor: dict[str, Any] = {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        # OpenSearch requires weights that sum to 1; the ranking is the same.
                        "parameters": {"weights": list(options.normalized_weights)},
                    },
                }
            }
        elif options.fusion == "rrf" and self.server_version >= SCORE_RANKER_SINCE:
            combination = {"technique": "rrf", "rank_constant": options.rrf_k}
            processor = {"score-ranker-processor": {"combination": combination}}
        else:
            return None
        body = {
            "description": f"sparsebridge hybrid search: {options.fusion} fusion of a sparse and a dense leg",
            "phase_results_processors": [processor],
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        return f"{PIPELINE_PREFIX}{options.fusion}-{digest}", body

    def _hybrid_plan(
        self, layout: Layout, sparse: dict[str, Any], dense: dict[str, Any], options: SearchOptions
    ) -> SearchPlan | None:
        pipeline = self.search_pipeline(options)
        if pipeline is None:
            return None
        name, body = pipeline
        if name not in self._pipelines:
            try:
                with self._api(f"put search pipeline {name!r}"):
                    self.client.search_pipeline.put(id=name, body=body)
            except ConnectorError as err:
                if "(HTTP 403)" not in str(err):
                    raise
                # No right to manage search pipelines: fuse on the client instead, and say why.
                self._fusion_refused = f"cannot put search pipeline {name!r} ({err})"
                return None
            self._pipelines.add(name)
        search = {
            # Each leg contributes its best `candidates` hits; the connector keeps the top_k fused.
            "size": max(options.candidates, options.top_k),
            "query": {"hybrid": {"queries": [sparse, dense]}},
            "_source": self._source_filter(options),
        }
        return SearchPlan(bodies=[search], pipeline=name)

    def _client_side_plan(self, layout, sparse, scale, dense, options, notes):  # type: ignore[override]
        plan = super()._client_side_plan(layout, sparse, scale, dense, options, notes)
        if options.fusion == "dbsf":
            plan.notes.append("fusion 'dbsf' has no OpenSearch search processor: the legs were fused on the client")
        elif self._fusion_refused is not None:
            pass  # the base notes why
        elif options.fusion == "rrf" and self.server_version < SCORE_RANKER_SINCE:
            version = ".".join(map(str, self.server_version))
            plan.notes.append(
                f"OpenSearch {version} has no score-ranker-processor for RRF (2.19+): the legs were fused on the client"
            )
        return plan

    def _call_search(self, index: str, body: dict[str, Any], pipeline: str) -> dict[str, Any]:
        return dict(self.client.search(index=index, body=body, params={"search_pipeline": pipeline}))

    # --- client calls -----------------------------------------------------------------------------

    def _call_exists(self, index: str) -> bool:
        return bool(self.client.indices.exists(index=index))

    def _call_create(self, index: str, body: dict[str, Any]) -> None:
        self.client.indices.create(index=index, body=body)

    def _call_get_mapping(self, index: str) -> dict[str, Any]:
        return dict(self.client.indices.get_mapping(index=index))

    def _call_put_mapping(self, index: str, properties: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, body={"properties": properties})

    def _call_put_meta(self, index: str, meta: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, body={"_meta": meta})

    def _call_msearch(self, index: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.client.msearch(body=lines))

    def _call_mget(self, index: str, ids: list[str]) -> dict[str, Any]:
        return dict(self.client.mget(index=index, body={"ids": ids}))

    def _call_count(self, index: str) -> int:
        return int(self.client.count(index=index)["count"])

    def _call_refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index)

    def _call_delete_index(self, index: str) -> None:
        self.client.indices.delete(index=index)
