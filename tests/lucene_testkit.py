"""Test kit for the Elasticsearch and OpenSearch connectors: a stand-in REST server for the offline
tests, and the corpus encoding and exact reference ranking for the live ones.

A stand-in Elasticsearch / OpenSearch REST server on 127.0.0.1, for tests that cannot run a real one.

The real ``elasticsearch`` / ``opensearch-py`` clients talk to it over HTTP through their own
transports and bulk helpers, so what it records (every request, and the answer it gave) is exactly
what the clients would send to an engine. It answers the handful of APIs the connectors use the way
the engines document and test them (``tests/test_engine_double.py`` holds it to the engines' own
YAML REST tests and integration tests, and every answer can be checked against the response
schemas of the specifications):

* weights of ``rank_features`` / ``sparse_vector`` fields are kept as Lucene's FeatureField keeps
  them (9 significant bits, truncated) and scores are float32 products summed as Lucene sums a
  disjunction; multi-valued Elasticsearch ``sparse_vector`` values (8.15+) keep each token's
  strongest weight;
* queries: ``sparse_vector`` (``query_vector``, ``prune``/``pruning_config`` with Elasticsearch's
  token pruning, the field's pruning default on 8.19+/9.1+, ``boost``, ``_name``, its errors),
  ``neural_sparse`` with ``query_tokens`` (``boost``, ``method_parameters.filter``), ``bool`` of
  boosted ``term`` queries on a sparse field, ``term``/``terms`` filters, ``match_all``;
* bulk: index/create/update/delete with the documented item results (a delete of a missing
  document is 404 ``not_found`` and no error), mapping checks per item;
* ``_source`` filtering in all its forms (``false``, a pattern, a list, includes/excludes with
  ``*``), and Elasticsearch 9.2+'s ``index.mapping.exclude_source_vectors``: vector fields left out
  of every answer unless asked for (``exclude_vectors: false``, ``_source_exclude_vectors=false`` or
  an include naming the field), and then rebuilt from what the index keeps.

Engines that encode text by calling a model server (Elasticsearch's ``custom`` inference service,
``semantic_text``, ``sparse_vector`` with ``inference_id``; OpenSearch's ML connectors, remote
models, the ``sparse_encoding`` ingest processor, ``neural_sparse`` with ``model_id``) are in
``engine_inference.py``: it calls the model server over HTTP as the engines document it, not as
sparsebridge's code expects.

It also behaves like the versions it claims to be where the connectors care: an 8.x Elasticsearch
refuses the 9.x client's ``compatible-with=9`` media types, has no ``sparse_vector`` query before
8.15 and no dots in ``sparse_vector`` keys before 8.16; OpenSearch refuses ``neural_sparse``
weights outside (0, 64] on ``rank_features``. Fault injection: whole-request error statuses and
per-item bulk failures, scripted per test.

OpenSearch SEISMIC ``sparse_vector`` fields holding at least ``approximate_threshold`` documents
are searched approximately, as neural-search does: posting lists cut to their ``n_postings``
heaviest documents, the query's ``top_n`` heaviest tokens walked, the best ``k`` kept (see
``FakeEngine._seismic_search``); below the threshold they are searched exactly, as the engine does.

It is a test double, not an engine: no analysis, no relevance beyond the dot product, one shard,
no index auto-creation, and of SEISMIC neither the clustered posting lists (so ``heap_factor``
skips nothing) nor the byte quantization.
"""

from __future__ import annotations

import json
import math
import re
import struct
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine_inference import InferenceEngineMixin, InferenceError


@dataclass
class Recorded:
    """One request the stand-in server received, and the answer it gave (status, decoded JSON)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response: Any = None

    def lines(self) -> list[Any]:
        return [json.loads(x) for x in self.body.splitlines() if x.strip()]

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


def _version_tuple(number: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", number)[:3])


def _error(status: int, etype: str, reason: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    err = {"type": etype, "reason": reason, **extra}
    return status, {"error": {"root_cause": [err], **err}, "status": status}


class _RequestError(Exception):
    def __init__(self, status: int, etype: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.etype, self.reason = status, etype, reason


# --- what Lucene and the engines do to the data ---------------------------------------------------

# Lucene's FeatureField (behind ``rank_features``, Elasticsearch ``sparse_vector`` and the SEISMIC
# ``sparse_vector`` of OpenSearch's neural-search, whose ValueEncoder does the same) stores a weight
# as a term frequency: the float32's bits shifted right by 15, i.e. sign, exponent and the top 8
# mantissa bits (9 significant bits, truncated). neural-search's own integration tests compute their
# expected scores with exactly this round trip (BaseNeuralSearchIT.getFeatureFieldCompressedNumber).
FLOAT_MIN_NORMAL = 2.0**-126


def float32(x: float) -> float:
    """``x`` rounded to the nearest float32, as the engines parse JSON numbers for these fields."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def lucene_feature_value(weight: float) -> float:
    """The weight a FeatureField gives back for ``weight``: float32, low 15 bits cleared."""
    bits = struct.unpack("<I", struct.pack("<f", weight))[0]
    return struct.unpack("<f", struct.pack("<I", (bits >> 15) << 15))[0]


def lucene_score_sum(products: list[float]) -> float:
    """A disjunction's score: the clauses' float32 scores summed in double, then cast to float32."""
    return float32(math.fsum(products)) if products else 0.0


# Elasticsearch's token pruning defaults (``TokenPruningConfig``): a query token is pruned when it
# is frequent in the field (document frequency ratio above ``tokens_freq_ratio_threshold`` x the
# field's average) and weak (below ``tokens_weight_threshold`` x the query's best weight).
DEFAULT_PRUNING = {
    "tokens_freq_ratio_threshold": 5.0,
    "tokens_weight_threshold": 0.4,
    "only_score_pruned_tokens": False,
}

# neural-search's SEISMIC defaults (SparseConstants.Seismic, SparseAnnQueryBuilder): the segment size
# from which a segment is searched approximately, the posting length (a ratio of the segment's
# documents, at least 160), and the query's top_n and k.
SEISMIC_APPROXIMATE_THRESHOLD = 1_000_000
SEISMIC_POSTING_RATIO = 0.0005
SEISMIC_MIN_POSTINGS = 160
SEISMIC_TOP_N = 10
SEISMIC_K = 10

VECTOR_TYPES = ("dense_vector", "sparse_vector", "rank_vectors")


def _pattern(p: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in p) + r"\Z")


def _may_match_below(pattern: str, path: str) -> bool:
    """Whether ``pattern`` can match some field under the object at ``path``."""
    literal = pattern.split("*", 1)[0]
    head = path + "."
    return literal.startswith(head) or ("*" in pattern and head.startswith(literal))


def filter_source(source: dict[str, Any], includes: list[str], excludes: list[str], prefix: str = "") -> dict[str, Any]:
    """Elasticsearch / OpenSearch source filtering: full dotted paths matched against ``*``
    patterns; an included object comes whole, a partly included one only with what is included
    (objects left empty that way are dropped, in arrays too); excludes win."""
    inc = [_pattern(p) for p in includes]
    exc = [_pattern(p) for p in excludes]

    def walk(obj: dict[str, Any], prefix: str, whole: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            path = prefix + key
            if any(e.match(path) for e in exc):
                continue
            here = whole or not inc or any(i.match(path) for i in inc)
            if not here and not any(_may_match_below(p, path) for p in includes):
                continue
            if isinstance(value, dict):
                sub = walk(value, path + ".", here)
                if here or sub:
                    out[key] = sub
            elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
                items = [walk(v, path + ".", here) if isinstance(v, dict) else v for v in value]
                items = [v for v in items if here or not isinstance(v, dict) or v]
                if here or items:
                    out[key] = items
            elif here:
                out[key] = value
        return out

    return walk(source, prefix, False)


def source_request(spec: Any, query: dict[str, list[str]] | None = None) -> tuple[bool, list[str], list[str], Any]:
    """Read a ``_source`` request in any of its forms (``false``/``true``, a pattern, a list of
    patterns, ``{includes, excludes, exclude_vectors}``, the URL parameters ``_source``,
    ``_source_includes``, ``_source_excludes``, ``_source_exclude_vectors``): (wanted, includes,
    excludes, exclude_vectors or None when not said)."""
    query = query or {}

    def patterns(x: Any) -> list[str]:
        if x is None:
            return []
        return [p for item in ([x] if isinstance(x, str) else x) for p in str(item).split(",") if p]

    exclude_vectors = None
    if spec is None and "_source" in query:
        raw = query["_source"][0]
        spec = {"true": True, "false": False}.get(raw, raw)
    if spec is False:
        return False, [], [], None
    includes: list[str] = []
    excludes: list[str] = []
    if isinstance(spec, (str, list)):
        includes = patterns(spec)
    elif isinstance(spec, dict):
        includes = patterns(spec.get("includes", spec.get("include")))
        excludes = patterns(spec.get("excludes", spec.get("exclude")))
        exclude_vectors = spec.get("exclude_vectors")
    includes += patterns(query.get("_source_includes"))
    excludes += patterns(query.get("_source_excludes"))
    if "_source_exclude_vectors" in query:
        exclude_vectors = query["_source_exclude_vectors"][0] != "false"
    return True, includes, excludes, exclude_vectors


def _flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat_settings(value, prefix + key + "."))
        else:
            out[(prefix + key).removeprefix("index.")] = value
    return out


def _vector_paths(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted path -> type of every vector field in a mapping's ``properties``."""
    out: dict[str, str] = {}
    for name, prop in props.items():
        if prop.get("type") in VECTOR_TYPES:
            out[prefix + name] = prop["type"]
        out.update(_vector_paths(prop.get("properties") or {}, prefix + name + "."))
    return out


def _lookup(src: Any, path: str) -> Any:
    """The value at a dotted ``path``, whether the source nests objects or writes dotted keys."""
    if not isinstance(src, dict):
        return None
    if path in src:
        return src[path]
    head, dot, rest = path.partition(".")
    while dot:
        if head in src:
            found = _lookup(src[head], rest)
            if found is not None:
                return found
        more, dot, rest = rest.partition(".")
        head = head + "." + more
    return None


# --- hybrid search in the engine double: kNN, retrievers, the hybrid query, search pipelines -------
#
# Held to the engines' documented behaviour (and their source where the documentation is silent):
#
# * kNN scores. Elasticsearch ``dense_vector``: cosine ``(1 + cos) / 2``, dot_product
#   ``(1 + dot) / 2``, l2_norm ``1 / (1 + d**2)``. OpenSearch ``knn_vector`` (Lucene engine):
#   cosinesimil ``(1 + cos) / 2``, innerproduct ``dot + 1`` (``1 / (1 - dot)`` below 0), l2
#   ``1 / (1 + d**2)``. Filters inside the kNN search apply before its top-k cut.
# * Elasticsearch retrievers (8.14+; ``linear`` 8.18+; both need an Enterprise or trial licence,
#   else 403 ``security_exception`` "current license is non-compliant for [...]"): ``rrf`` sums
#   ``1 / (rank_constant + rank)`` with ranks from 1 over each child's top ``rank_window_size``
#   (defaults 60 and ``size``, which must not exceed the window); ``linear`` sums ``weight *
#   normalized score`` with ``minmax`` ``(s - min) / (max - min)`` over each child's window, a
#   leg whose scores are all equal keeping its raw scores (MinMaxScoreNormalizer), absent = 0.
# * OpenSearch ``hybrid`` (2.10+) runs only through a search pipeline with a
#   ``normalization-processor`` or (2.19+) a ``score-ranker-processor``; each sub-query contributes
#   its top ``size`` hits. ``min_max`` gives ``(s - min) / (max - min)``, 0.001 instead of 0, and 1.0
#   for a sub-query whose scores are all equal; ``arithmetic_mean`` is ``sum(w * s) / sum(w)`` over
#   all sub-queries (absent = 0), and the weights must sum to 1; ``rrf`` sums
#   ``1 / (rank_constant + rank)``, ranks from 1, ``rank_constant`` default 60.

ES_RETRIEVERS_SINCE = (8, 14)
ES_LINEAR_RETRIEVER_SINCE = (8, 18)
OS_SCORE_RANKER_SINCE = (2, 19)
_ES_RETRIEVER_FEATURES = {"rrf": "Reciprocal Rank Fusion (RRF)", "linear": "linear retriever"}


class HybridEngineMixin:
    """What :class:`FakeEngine` needs for hybrid search (see the notes above); its hooks are
    :meth:`_route_hybrid`, :meth:`_search_hybrid` and :meth:`_eval_knn`."""

    def pipelines(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_pipelines", {})

    # --- routes: search pipelines and the single-search API

    def _route_hybrid(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, Any] | None:
        segs = [s for s in path.split("/") if s]
        if not self.is_es and segs[:2] == ["_search", "pipeline"] and len(segs) == 3:
            name = segs[2]
            if method == "PUT":
                return self._put_pipeline(name, json.loads(body or b"{}"))
            if method == "GET":
                if name not in self.pipelines():
                    return 404, {}
                return 200, {name: self.pipelines()[name]}
            if method == "DELETE":
                self.pipelines().pop(name, None)
                return 200, {"acknowledged": True}
        if len(segs) == 2 and segs[1] == "_search" and method in ("GET", "POST") and "scroll" not in query:
            index = segs[0]
            if index not in self.indices:
                return self._missing(index)
            search = json.loads(body or b"{}")
            pipeline = (query.get("search_pipeline") or [None])[0]
            try:
                result = self._search_hybrid(self.indices[index], index, search, pipeline)
                if result is None:
                    result = self._search(self.indices[index], index, search)
            except _RequestError as err:
                return _error(err.status, err.etype, err.reason)
            result.pop("status", None)
            return 200, result
        return None

    def _put_pipeline(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        for proc in body.get("phase_results_processors", []):
            ((kind, spec),) = proc.items()
            if kind == "score-ranker-processor" and self.vtuple < OS_SCORE_RANKER_SINCE:
                return _error(400, "parse_exception", f"Invalid processor type {kind}")
            if kind == "normalization-processor":
                weights = ((spec.get("combination") or {}).get("parameters") or {}).get("weights")
                if weights is not None and abs(sum(weights) - 1.0) > 0.01:
                    return _error(
                        400,
                        "illegal_argument_exception",
                        f"sum of weights for combination must be equal to 1.0, submitted weights: {weights}",
                    )
        self.pipelines()[name] = body
        return 200, {"acknowledged": True}

    # --- searches

    def _search_hybrid(
        self, idx: dict[str, Any], index: str, body: dict[str, Any], pipeline: str | None = None
    ) -> dict[str, Any] | None:
        """The answer to a search with a retriever, a top-level knn or a hybrid query; None for any
        other search (the plain path answers it)."""
        size = body.get("size", 10)
        if "retriever" in body:
            if not self.is_es or self.vtuple < ES_RETRIEVERS_SINCE:
                raise _RequestError(400, "parsing_exception", "Unknown key for a START_OBJECT in [retriever].")
            ranked = self._retrieve(idx, body["retriever"], size)
        elif "knn" in body and self.is_es:
            knn = body["knn"]
            ranked = self._knn_ranking(idx, knn["field"], knn["query_vector"], knn.get("k", size), knn.get("filter"))
        elif "hybrid" in (body.get("query") or {}) and not self.is_es:
            ranked = self._hybrid(idx, body["query"]["hybrid"], size, pipeline)
        else:
            return None
        return self._hits_response(idx, index, ranked[:size], body)

    def _hits_response(
        self,
        idx: dict[str, Any],
        index: str,
        ranked: list[tuple[float, str]],
        body: dict[str, Any],
        total: int | None = None,
        named: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """A search answer of the ``ranked`` (score, id) hits: ``_source`` as the body asks,
        ``matched_queries`` from ``named``, ``hits.total`` = ``total`` (default: the hits)."""
        hits = []
        for score, doc_id in ranked:
            hit: dict[str, Any] = {"_index": index, "_id": doc_id, "_score": score}
            # The same source rules as every other answer (list form, vectors left out on ES 9.2+).
            source = self._source_of(idx, idx["docs"][doc_id], body.get("_source"))
            if source is not None:
                hit["_source"] = source
            if named and named.get(doc_id):
                hit["matched_queries"] = named[doc_id]
            hits.append(hit)
        result: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"max_score": hits[0]["_score"] if hits else None, "hits": hits},
            "status": 200,
        }
        if body.get("track_total_hits", True) is not False:
            result["hits"]["total"] = {"value": len(ranked) if total is None else total, "relation": "eq"}
        return result

    def _query_ranking(self, idx: dict[str, Any], query: dict[str, Any], flt: Any = None) -> list[tuple[float, str]]:
        scored = []
        for doc_id, src in idx["docs"].items():
            matched, score = self._eval(idx, query, src)
            if matched and self._passes(idx, flt, src):
                scored.append((score, doc_id))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return scored

    def _passes(self, idx: dict[str, Any], flt: Any, src: dict[str, Any]) -> bool:
        return all(self._eval(idx, f, src)[0] for f in _as_list(flt))

    def _knn_ranking(
        self, idx: dict[str, Any], field_name: str, vector: list[float], k: int, flt: Any = None
    ) -> list[tuple[float, str]]:
        prop = self._property(idx, field_name)
        if prop is None or prop.get("type") not in ("dense_vector", "knn_vector"):
            raise _RequestError(400, "illegal_argument_exception", f"field [{field_name}] is not a dense vector field")
        dims = prop.get("dims") or prop.get("dimension")
        if len(vector) != dims:
            raise _RequestError(
                400,
                "illegal_argument_exception",
                f"The query vector has a different number of dimensions [{len(vector)}] than the document "
                f"vectors [{dims}].",
            )
        if prop["type"] == "dense_vector":
            space = {"cosine": "cosine", "dot_product": "dot", "l2_norm": "l2"}[prop.get("similarity", "cosine")]
        else:
            method = prop.get("method") or {}
            space = {"cosinesimil": "cosine", "innerproduct": "ip", "l2": "l2"}[
                method.get("space_type", prop.get("space_type", "l2"))
            ]
        scored = []
        for doc_id, src in idx["docs"].items():
            doc = src.get(field_name)
            if doc is None or not self._passes(idx, flt, src):
                continue
            scored.append((_vector_score(space, vector, doc, self.is_es), doc_id))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return scored[:k]

    def _property(self, idx: dict[str, Any], name: str) -> dict[str, Any] | None:
        return idx["mappings"].get("properties", {}).get(name)

    def _eval_knn(self, idx: dict[str, Any], spec: dict[str, Any], src: dict[str, Any]) -> tuple[bool, float]:
        """OpenSearch's ``knn`` query: a hit when the document is among the k nearest."""
        if self.is_es:
            raise _RequestError(400, "parsing_exception", "unknown query [knn]")
        ((fname, inner),) = spec.items()
        ranked = self._knn_ranking(idx, fname, inner["vector"], inner["k"], inner.get("filter"))
        me = self._doc_id(idx, src)
        for score, doc_id in ranked:
            if doc_id == me:
                return True, score
        return False, 0.0

    @staticmethod
    def _doc_id(idx: dict[str, Any], src: dict[str, Any]) -> str | None:
        for doc_id, doc in idx["docs"].items():
            if doc is src:
                return doc_id
        return None

    # --- Elasticsearch retrievers

    def _retrieve(self, idx: dict[str, Any], container: dict[str, Any], size: int) -> list[tuple[float, str]]:
        ((kind, spec),) = container.items()
        flt = spec.get("filter")
        if kind == "standard":
            ranked = self._query_ranking(idx, spec.get("query", {"match_all": {}}), flt)
            return ranked
        if kind == "knn":
            return self._knn_ranking(idx, spec["field"], spec["query_vector"], spec["k"], flt)
        if kind in ("rrf", "linear"):
            if kind == "linear" and self.vtuple < ES_LINEAR_RETRIEVER_SINCE:
                raise _RequestError(400, "x_content_parse_exception", "unknown retriever [linear]")
            if self.license not in ("trial", "enterprise"):
                raise _RequestError(
                    403,
                    "security_exception",
                    f"current license is non-compliant for [{_ES_RETRIEVER_FEATURES[kind]}]",
                )
            window = spec.get("rank_window_size", size)
            if window < size:
                raise _RequestError(
                    400,
                    "illegal_argument_exception",
                    f"[rank_window_size] must be greater than or equal to [size], got {window} and {size}",
                )
            fused: dict[str, float] = defaultdict(float)
            for child in spec["retrievers"]:
                if kind == "rrf":
                    inner = child.get("retriever", child) if "retriever" in child else child
                    ranked = self._retrieve(idx, inner, window)[:window]
                    for rank, (_, doc_id) in enumerate(ranked, start=1):
                        fused[doc_id] += 1.0 / (spec.get("rank_constant", 60) + rank)
                else:
                    ranked = self._retrieve(idx, child["retriever"], window)[:window]
                    for score, doc_id in _es_minmax(ranked, child.get("normalizer", "none")):
                        fused[doc_id] += child.get("weight", 1.0) * score
            out = sorted(((s, d) for d, s in fused.items()), key=lambda t: (-t[0], t[1]))
            return [(s, d) for s, d in out if self._passes(idx, flt, idx["docs"][d])]
        raise _RequestError(400, "x_content_parse_exception", f"unknown retriever [{kind}]")

    # --- OpenSearch hybrid query

    def _hybrid(
        self, idx: dict[str, Any], hybrid: dict[str, Any], size: int, pipeline: str | None
    ) -> list[tuple[float, str]]:
        if pipeline is None:
            raise _RequestError(400, "illegal_argument_exception", "hybrid query must be used with a search pipeline")
        if pipeline not in self.pipelines():
            raise _RequestError(404, "resource_not_found_exception", f"Pipeline {pipeline} is not defined")
        ((kind, spec),) = self.pipelines()[pipeline]["phase_results_processors"][0].items()
        legs = [self._query_ranking(idx, q, hybrid.get("filter"))[:size] for q in hybrid["queries"]]
        fused: dict[str, float] = defaultdict(float)
        if kind == "score-ranker-processor":
            k = spec["combination"].get("rank_constant", 60)
            for leg in legs:
                for rank, (_, doc_id) in enumerate(leg, start=1):
                    fused[doc_id] += 1.0 / (k + rank)
        else:
            weights = (spec.get("combination") or {}).get("parameters", {}).get("weights") or [1.0] * len(legs)
            for leg, w in zip(legs, weights):
                for score, doc_id in _os_minmax(leg):
                    fused[doc_id] += w * score
            fused = defaultdict(float, {d: s / sum(weights) for d, s in fused.items()})
        return sorted(((s, d) for d, s in fused.items()), key=lambda t: (-t[0], t[1]))


def _vector_score(space: str, query: list[float], doc: list[float], is_es: bool) -> float:
    import math

    dot = sum(a * b for a, b in zip(query, doc))
    if space == "cosine":
        norm = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in doc))
        return (1.0 + (dot / norm if norm else 0.0)) / 2.0
    if space == "dot":
        return (1.0 + dot) / 2.0
    if space == "ip":
        return dot + 1.0 if dot >= 0 else 1.0 / (1.0 - dot)
    return 1.0 / (1.0 + sum((a - b) ** 2 for a, b in zip(query, doc)))


def _es_minmax(ranked: list[tuple[float, str]], normalizer: str) -> list[tuple[float, str]]:
    if normalizer != "minmax" or not ranked:
        return ranked
    scores = [s for s, _ in ranked]
    lo, hi = min(scores), max(scores)
    if abs(hi - lo) < 1e-6:
        return ranked  # Elasticsearch keeps the raw scores of a leg whose scores are all equal
    return [((s - lo) / (hi - lo), d) for s, d in ranked]


def _os_minmax(ranked: list[tuple[float, str]]) -> list[tuple[float, str]]:
    if not ranked:
        return ranked
    scores = [s for s, _ in ranked]
    lo, hi = min(scores), max(scores)
    out = []
    for s, d in ranked:
        if hi == lo:
            out.append((1.0, d))
        else:
            n = (s - lo) / (hi - lo)
            out.append((n if n != 0.0 else 0.001, d))
    return out


@dataclass
class FakeEngine(HybridEngineMixin, InferenceEngineMixin):
    flavor: str = "elasticsearch"  # or "opensearch"
    version: str = "9.1.0"
    plugins: tuple[str, ...] = ("opensearch-neural-search", "opensearch-knn")
    build_flavor: str = "default"
    # Whole-request faults: path regex -> deque of statuses to answer with, one per matching request.
    request_faults: dict[str, deque] = field(default_factory=dict)
    # Per-item bulk faults: document id -> deque of (status, error type), one per attempt.
    item_faults: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    require_auth: str | None = None  # the exact Authorization header value to accept
    license: str = "trial"  # Elasticsearch licence: "basic" has no rrf/linear retrievers

    def __post_init__(self) -> None:
        self.requests: list[Recorded] = []
        self.indices: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.seq_no = 0
        self.scrolls: dict[str, dict[str, Any]] = {}
        # What searches read from an index's whole state (pruning statistics, SEISMIC candidates),
        # computed once per state: cleared whenever a write moves seq_no on.
        self._stats_cache: dict[tuple, Any] = {}
        self._stats_seq_no = 0

    # --- test helpers ---

    @property
    def is_es(self) -> bool:
        return self.flavor == "elasticsearch"

    @property
    def vtuple(self) -> tuple[int, ...]:
        return _version_tuple(self.version)

    def fail_requests(self, path_regex: str, *statuses: int) -> None:
        self.request_faults.setdefault(path_regex, deque()).extend(statuses)

    def fail_items(self, doc_id: str, *faults: tuple[int, str]) -> None:
        self.item_faults[doc_id].extend(faults)

    def calls(self, path_regex: str, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if re.search(path_regex, r.path) and (method is None or r.method == method)]

    def add_index(self, name: str, mappings: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Put an index in place as if created on this engine's current version."""
        self.indices[name] = {"mappings": mappings, "settings": settings or {}, "docs": {}, "created": self.vtuple}

    # --- HTTP ---

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        """Answer one HTTP request: (status, response headers, JSON payload or None)."""
        parts = urlsplit(target)
        record = Recorded(method, parts.path, parse_qs(parts.query), dict(headers), body)
        with self.lock:
            self.requests.append(record)
        status, resp_headers, payload = self._answer(method, record.path, record.query, headers, body)
        record.status, record.response = status, json.loads(json.dumps(payload))  # as sent, not later edits
        return status, resp_headers, payload

    def _answer(
        self, method: str, path: str, query: dict, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, Any]:
        resp_headers = {"content-type": "application/json"}
        if self.is_es:
            resp_headers["x-elastic-product"] = "Elasticsearch"
        if self.require_auth is not None and headers.get("authorization") != self.require_auth:
            status, payload = _error(401, "security_exception", "missing authentication credentials for REST request")
            return status, resp_headers, payload
        bad = self._check_media_types(headers)
        if bad:
            return bad[0], resp_headers, bad[1]
        for regex, statuses in self.request_faults.items():
            if statuses and re.search(regex, path):
                status = statuses.popleft()
                etype = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
                s, payload = _error(status, etype, f"injected fault {status}")
                return s, resp_headers, payload
        try:
            status, payload = self._route(method, path, query, body)
        except (_RequestError, InferenceError) as err:
            status, payload = _error(err.status, err.etype, err.reason)
        return status, resp_headers, payload

    def _check_media_types(self, headers: dict[str, str]) -> tuple[int, dict] | None:
        if not self.is_es:
            return None
        for name in ("accept", "content-type"):
            value = headers.get(name, "")
            m = re.search(r"compatible-with=(\d+)", value)
            if m and int(m.group(1)) > self.vtuple[0]:
                return _error(
                    400,
                    "media_type_header_exception",
                    "Invalid media-type value on headers [Accept, Content-Type]",
                    caused_by={
                        "type": "status_exception",
                        "reason": f"Accept version must be either version {self.vtuple[0]} or "
                        f"{self.vtuple[0] - 1}, but found {m.group(1)}. Accept={value}",
                    },
                )
        return None

    def _route(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, Any]:
        segs = [s for s in path.split("/") if s]
        hybrid = self._route_hybrid(method, path, query, body)
        if hybrid is not None:
            return hybrid
        inference = self._route_inference(method, path, query, body)
        if inference is not None:
            return inference
        if method == "GET" and not segs:
            return 200, self._info()
        if segs[:2] == ["_cat", "plugins"]:
            return 200, [{"name": "node-1", "component": p, "version": self.version} for p in self.plugins]
        if segs == ["_bulk"] or segs[-1:] == ["_bulk"]:
            return self._bulk(body, segs[0] if len(segs) == 2 else None)
        if segs == ["_msearch"] or segs[-1:] == ["_msearch"]:
            return self._msearch(body, segs[0] if len(segs) == 2 else None)
        if segs[:2] == ["_search", "scroll"]:
            return self._scroll_next(method, json.loads(body or b"{}"))
        index = segs[0]
        if len(segs) == 1:
            if method == "HEAD":
                return (200 if index in self.indices else 404), None
            if method == "PUT":
                return self._create(index, json.loads(body or b"{}"))
            if method == "DELETE":
                if index not in self.indices:
                    return self._missing(index)
                del self.indices[index]
                self._stats_cache.clear()  # a new index may reuse the dropped one's identity
                return 200, {"acknowledged": True}
        if index not in self.indices:
            return self._missing(index)
        idx = self.indices[index]
        op = segs[1]
        if op == "_mapping" and method == "GET":
            return 200, {index: {"mappings": idx["mappings"]}}
        if op == "_mapping":
            new = json.loads(body)
            _merge_properties(idx["mappings"].setdefault("properties", {}), new.get("properties", {}))
            if "_meta" in new:  # the engines replace _meta whole
                idx["mappings"]["_meta"] = new["_meta"]
            return 200, {"acknowledged": True}
        if op == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_count":
            return 200, {"count": len(idx["docs"]), "_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_search" and "scroll" in query:
            return self._scroll_start(index, json.loads(body or b"{}"), query)
        if op == "_mget":
            return 200, self._mget(index, idx, json.loads(body), query)
        raise _RequestError(400, "illegal_argument_exception", f"fake server: no handler for {method} {path}")

    def _missing(self, index: str) -> tuple[int, Any]:
        return _error(404, "index_not_found_exception", f"no such index [{index}]", index=index)

    def _info(self) -> dict[str, Any]:
        # Every field the specifications require of ``GET /`` (ElasticsearchVersionInfo /
        # OpenSearchVersionInfo); the values are placeholders of the right type.
        major = self.vtuple[0]
        version: dict[str, Any] = {
            "number": self.version,
            "build_type": "docker",
            "build_hash": "0" * 40,
            "build_date": "2025-01-01T00:00:00.000000000Z",
            "build_snapshot": False,
            "lucene_version": "10.2.2",
            "minimum_wire_compatibility_version": f"{max(major - 1, 1)}.0.0",
            "minimum_index_compatibility_version": f"{max(major - 1, 1)}.0.0",
        }
        info = {"name": "node-1", "cluster_name": "fake", "cluster_uuid": "aBcDeFgHiJkLmNoPqRsTuV"}
        if self.is_es:
            version["build_flavor"] = self.build_flavor
            return {**info, "version": version, "tagline": "You Know, for Search"}
        version["distribution"] = "opensearch"
        return {**info, "version": version, "tagline": "The OpenSearch Project"}

    # --- index creation ---

    def _create(self, index: str, body: dict[str, Any]) -> tuple[int, Any]:
        if index in self.indices:
            return _error(400, "resource_already_exists_exception", f"index [{index}] already exists", index=index)
        mappings = body.get("mappings", {})
        for name, prop in mappings.get("properties", {}).items():
            kind = prop.get("type", "object")
            if kind == "semantic_text" and prop.get("inference_id") not in self._state()["endpoints"]:
                raise _RequestError(
                    400, "resource_not_found_exception", f"Inference endpoint not found [{prop.get('inference_id')}]"
                )
            if kind == "sparse_vector" and self.is_es and self.vtuple < (8, 11):
                raise _RequestError(
                    400, "mapper_parsing_exception", "The [sparse_vector] field type is no longer supported."
                )
            if kind == "sparse_vector" and not self.is_es:
                if self.vtuple < (3, 3):
                    raise _RequestError(
                        400,
                        "mapper_parsing_exception",
                        f"No handler for type [sparse_vector] declared on field [{name}]",
                    )
                if not (body.get("settings", {}).get("index", {}).get("sparse")):
                    raise _RequestError(
                        400, "illegal_argument_exception", "sparse_vector field requires index.sparse: true"
                    )
        self.add_index(index, json.loads(json.dumps(mappings)), body.get("settings", {}))
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}

    def _excludes_vectors(self, idx: dict[str, Any]) -> bool:
        """Elasticsearch ``index.mapping.exclude_source_vectors``: on by default for indices created
        on 9.2+ and on serverless (vector values left out of the stored ``_source`` and of every
        answer that does not ask for them); an index created earlier keeps its vectors."""
        if not self.is_es:
            return False
        value = _flat_settings(idx["settings"]).get("mapping.exclude_source_vectors")
        if value is not None:
            return str(value).lower() == "true"
        return idx["created"] >= (9, 2) or self.build_flavor == "serverless"

    def _prunes_by_default(self, idx: dict[str, Any]) -> bool:
        """New ``sparse_vector`` fields prune query tokens unless told not to: 8.19+ and 9.1+."""
        created = idx["created"]
        return self.is_es and ((8, 19) <= created < (9, 0) or created >= (9, 1) or self.build_flavor == "serverless")

    # --- bulk ---

    def _bulk(self, body: bytes, path_index: str | None) -> tuple[int, Any]:
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        items = []
        errors = False
        encoded = self.encode_bulk(_bulk_sources(lines, path_index))
        i = 0
        while i < len(lines):
            action = lines[i]
            op, meta = next(iter(action.items()))
            i += 1
            source = None
            if op in ("index", "create", "update"):
                source = lines[i]
                i += 1
            index = meta.get("_index") or path_index
            doc_id = meta.get("_id")
            item = {"_index": index, "_id": doc_id}
            faults = self.item_faults.get(doc_id)
            if faults:
                status, etype = faults.popleft()
                item.update(
                    status=status, error={"type": etype, "reason": f"injected item fault {status}", "index": index}
                )
                errors = True
            elif index not in self.indices:
                item.update(
                    status=404, error={"type": "index_not_found_exception", "reason": f"no such index [{index}]"}
                )
                errors = True
            elif op == "delete":
                # A delete of a missing document is no failure: ``errors`` stays false and the item
                # says 404 ``not_found`` (the engines' bulk API documentation and examples).
                found = self.indices[index]["docs"].pop(doc_id, None) is not None
                item.update(self._written(index, doc_id, "deleted" if found else "not_found"))
                item["status"] = 200 if found else 404
            elif op == "create" and doc_id in self.indices[index]["docs"]:
                reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
                item.update(status=409, error={"type": "version_conflict_engine_exception", "reason": reason})
                errors = True
            elif op == "update" and doc_id not in self.indices[index]["docs"]:
                item.update(
                    status=404, error={"type": "document_missing_exception", "reason": f"[{doc_id}]: document missing"}
                )
                errors = True
            else:
                if op == "update":  # a partial document, merged into the stored one
                    source = {**self.indices[index]["docs"][doc_id], **(source or {}).get("doc", {})}
                problem = None
                try:
                    if op != "update":
                        source = self._ingest_inference(index, doc_id, source, encoded)
                    self.semantic_embeddings(self.indices[index], index, doc_id, source, encoded)
                except InferenceError as err:
                    problem = err.reason
                problem = problem or self._check_doc(self.indices[index]["mappings"], source)
                if problem:
                    etype = (
                        "document_parsing_exception"
                        if self.is_es and self.vtuple >= (8, 8)
                        else "mapper_parsing_exception"
                    )
                    item.update(status=400, error={"type": etype, "reason": problem, "index": index})
                    errors = True
                else:
                    existed = doc_id in self.indices[index]["docs"]
                    self.indices[index]["docs"][doc_id] = source
                    item.update(self._written(index, doc_id, "updated" if existed else "created"))
                    item["status"] = 200 if existed else 201
            items.append({op: item})
        return 200, {"took": 1, "errors": errors, "items": items}

    def _written(self, index: str, doc_id: str, result: str) -> dict[str, Any]:
        versions = self.indices[index].setdefault("versions", {})
        versions[doc_id] = versions.get(doc_id, 0) + (result != "not_found")
        self.seq_no += 1
        return {
            "_version": max(versions[doc_id], 1),
            "result": result,
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "_seq_no": self.seq_no - 1,
            "_primary_term": 1,
        }

    def _check_doc(self, mappings: dict[str, Any], source: dict[str, Any], prefix: str = "") -> str | None:
        props = mappings.get("properties", {})
        for name, value in source.items():
            prop = props.get(name)
            if prop is None:
                continue
            kind = prop.get("type", "object")
            if kind in ("sparse_vector", "rank_features"):
                problem = self._check_features(kind, prefix + name, value)
                if problem:
                    return problem
            elif kind == "dense_vector" and len(value) != prop.get("dims"):
                return (
                    f"The [dense_vector] field [{name}] in doc has a different number of dimensions "
                    f"[{len(value)}] than defined in the mapping [{prop.get('dims')}]"
                )
            elif kind == "knn_vector" and len(value) != prop.get("dimension"):
                return f"Vector dimension mismatch. Expected: {prop.get('dimension')}, Given: {len(value)}"
            elif kind == "object" and isinstance(value, dict):
                problem = self._check_doc(prop, value, prefix + name + ".")
                if problem:
                    return problem
            elif kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
                if not (isinstance(value, str) and value.lstrip("-").isdigit()):
                    return f'failed to parse field [{name}] of type [integer]: For input string: "{value}"'
            elif kind == "float" and not isinstance(value, (int, float)):
                return f"failed to parse field [{name}] of type [float]"
            elif kind == "boolean" and not isinstance(value, bool):
                return f"failed to parse field [{name}] of type [boolean]"
        return None

    def _check_features(self, kind: str, name: str, value: Any) -> str | None:
        # Elasticsearch 8.15+ takes a list of objects for one sparse_vector (multi-valued; the
        # strongest weight of a token wins); an empty list or object is a document without tokens.
        multi = kind == "sparse_vector" and self.is_es and self.vtuple >= (8, 15) and isinstance(value, list)
        for part in value if multi else [value]:
            if not isinstance(part, dict):
                return f"[{kind}] fields must be json objects, expected a START_OBJECT but got: {type(part).__name__}"
            for key, w in part.items():
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                    return (
                        f"[{kind}] fields take hashes that map a feature to a strictly positive "
                        f"float, but got [{w}] for [{key}]"
                    )
                if float32(w) < FLOAT_MIN_NORMAL:
                    return f"[{kind}] field [{name}]: feature value {w} for [{key}] is below the minimum normal float"
                if kind == "sparse_vector" and self.is_es and "." in key and self.vtuple < (8, 16):
                    return f"[sparse_vector] fields do not support dots in feature names but found [{key}]"
                if kind == "sparse_vector" and not self.is_es and not key.isdigit():
                    return f"failed to parse field [{name}] of type [sparse_vector]: token [{key}] is not an integer"
        return None

    # --- reading documents back ---

    def _source_of(
        self, idx: dict[str, Any], src: dict[str, Any], spec: Any, query: dict[str, list[str]] | None = None
    ) -> dict[str, Any] | None:
        """The ``_source`` an answer carries for a stored document (None: left out), after the
        request's source filter and, on Elasticsearch indices that exclude vectors from the
        source, with vector fields only when asked: ``exclude_vectors: false`` (or the URL
        parameter ``_source_exclude_vectors=false``) or an include naming the field exactly. Such
        vectors are rebuilt from the index, so a sparse vector comes back with the weights Lucene
        kept (9 significant bits) and a dense one in float32."""
        wanted, includes, excludes, exclude_vectors = source_request(spec, query)
        if not wanted:
            return None
        if self._excludes_vectors(idx):
            vectors = _vector_paths(idx["mappings"].get("properties") or {})
            kept = {p for p in vectors if exclude_vectors is False or p in includes}
            src = _rebuild_vectors(src, {p: t for p, t in vectors.items() if p in kept})
            excludes = excludes + [p for p in vectors if p not in kept]
        return filter_source(src, includes, excludes)

    def _mget(self, index: str, idx: dict[str, Any], body: dict[str, Any], query: dict) -> dict[str, Any]:
        docs = []
        for i in body.get("ids") or [d["_id"] for d in body.get("docs", [])]:
            if i in idx["docs"]:
                doc: dict[str, Any] = {"_index": index, "_id": i, "_version": 1, "_seq_no": 0, "_primary_term": 1}
                doc["found"] = True
                source = self._source_of(idx, idx["docs"][i], body.get("_source"), query)
                if source is not None:
                    doc["_source"] = source
                docs.append(doc)
            else:
                docs.append({"_index": index, "_id": i, "found": False})
        return {"docs": docs}

    # --- search ---

    def _msearch(self, body: bytes, path_index: str | None) -> tuple[int, Any]:
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        responses = []
        for header, search in zip(lines[::2], lines[1::2]):
            index = header.get("index") or path_index
            try:
                if index not in self.indices:
                    raise _RequestError(404, "index_not_found_exception", f"no such index [{index}]")
                responses.append(self._search(self.indices[index], index, search))
            except _RequestError as err:
                status, payload = _error(err.status, err.etype, err.reason)
                responses.append({**payload, "status": status})
        return 200, {"took": 1, "responses": responses}

    def _search(self, idx: dict[str, Any], index: str, body: dict[str, Any]) -> dict[str, Any]:
        hybrid = self._search_hybrid(idx, index, body)
        if hybrid is not None:
            return hybrid
        size = body.get("size", 10)
        scored = []
        for doc_id, src in idx["docs"].items():
            named: list[str] = []
            matched, score = self._eval(idx, body.get("query", {"match_all": {}}), src, named)
            if matched:
                scored.append((score, doc_id, named))
        scored.sort(key=lambda t: (-t[0], t[1]))
        ranked = [(score, doc_id) for score, doc_id, _ in scored[:size]]
        named_by_id = {doc_id: named for _, doc_id, named in scored[:size]}
        return self._hits_response(idx, index, ranked, body, total=len(scored), named=named_by_id)

    # --- scroll (what the clients' helpers.scan uses) ---

    def _scroll_start(self, index: str, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
        size = int(query.get("size", [body.get("size", 10)])[0])
        source = body.get("_source", True)
        if isinstance(source, dict) and "exclude_vectors" in source and (not self.is_es or self.vtuple < (9, 1)):
            raise _RequestError(400, "x_content_parse_exception", "[_source] unknown field [exclude_vectors]")
        idx = self.indices[index]
        matched = [d for d, src in idx["docs"].items() if self._eval(idx, body.get("query", {"match_all": {}}), src)[0]]
        scroll_id = f"scroll-{len(self.scrolls)}"
        self.scrolls[scroll_id] = {"index": index, "ids": matched, "pos": 0, "size": size, "source": source}
        return 200, self._scroll_page(scroll_id)

    def _scroll_next(self, method: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "DELETE":
            ids = body.get("scroll_id") or []
            for sid in [ids] if isinstance(ids, str) else ids:
                self.scrolls.pop(sid, None)
            return 200, {"succeeded": True, "num_freed": len(ids)}
        sid = body.get("scroll_id")
        if sid not in self.scrolls:
            raise _RequestError(404, "search_context_missing_exception", f"No search context found for id [{sid}]")
        return 200, self._scroll_page(sid)

    def _scroll_page(self, sid: str) -> dict[str, Any]:
        state = self.scrolls[sid]
        idx = self.indices[state["index"]]
        spec = state["source"]
        page = state["ids"][state["pos"] : state["pos"] + state["size"]]
        state["pos"] += len(page)
        hits = [
            {"_index": state["index"], "_id": d, "_score": None, "_source": self._source_of(idx, idx["docs"][d], spec)}
            for d in page
            if d in idx["docs"]
        ]
        return {
            "_scroll_id": sid,
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": {"value": len(state["ids"]), "relation": "eq"}, "max_score": None, "hits": hits},
        }

    def _field_type(self, idx: dict[str, Any], path: str) -> str | None:
        prop = self._field_mapping(idx, path)
        return prop.get("type", "object") if prop else None

    def _features(self, src: dict[str, Any], field: str) -> dict[str, float]:
        """The token weights the index holds for ``field`` of a document (FeatureField values)."""
        value = _lookup(src, field)
        parts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        out: dict[str, float] = {}
        for part in parts:
            for key, w in part.items():
                out[key] = max(out.get(key, 0.0), lucene_feature_value(w))
        return out

    def _eval(
        self, idx: dict[str, Any], q: dict[str, Any], src: dict[str, Any], named: list[str] | None = None
    ) -> tuple[bool, float]:
        named = [] if named is None else named
        ((kind, spec),) = q.items()
        if kind == "match_all":
            return True, float32(spec.get("boost", 1.0)) if isinstance(spec, dict) else 1.0
        if kind == "knn":
            return self._eval_knn(idx, spec, src)
        if kind == "sparse_vector":
            return self._sparse_vector_query(idx, spec, src, named)
        if kind == "semantic":
            return self._semantic_query(idx, spec, src)
        if kind == "neural_sparse":
            if self.is_es or "opensearch-neural-search" not in self.plugins:
                raise _RequestError(400, "parsing_exception", "unknown query [neural_sparse]")
            ((fname, inner),) = spec.items()
            ftype = self._field_type(idx, fname)
            if ftype not in ("rank_features", "sparse_vector"):
                raise _RequestError(
                    400,
                    "illegal_argument_exception",
                    f"[neural_sparse] query only works on [rank_features] fields: [{fname}]",
                )
            if "query_text" in inner:  # encoded by the model (neural-search), then scored as query_tokens
                if "model_id" not in inner or "query_tokens" in inner:
                    raise _RequestError(
                        400, "illegal_argument_exception", "query_text needs model_id, without query_tokens"
                    )
                inner = {**inner, "query_tokens": self._infer("os", inner["model_id"], inner["query_text"])}
            tokens = inner["query_tokens"]
            if ftype == "rank_features":
                for w in tokens.values():
                    if not 0 < w <= 64:
                        raise _RequestError(400, "illegal_argument_exception", f"weight must be in (0, 64], got: {w}")
            flt = (inner.get("method_parameters") or {}).get("filter")
            if flt is not None and not self._eval(idx, flt, src)[0]:
                return False, 0.0
            if ftype == "sparse_vector" and not self._seismic_candidate(idx, fname, inner, src):
                return False, 0.0
            ok, score = self._dot(self._features(src, fname), tokens)
            return ok, float32(score * inner.get("boost", 1.0))
        if kind == "term":
            ((fname, inner),) = spec.items()
            value = inner["value"] if isinstance(inner, dict) else inner
            boost = inner.get("boost", 1.0) if isinstance(inner, dict) else 1.0
            ftype = self._field_type(idx, fname)
            if ftype == "sparse_vector" and self.is_es:
                # A term query on a sparse_vector field scores the stored feature weight x boost.
                w = self._features(src, fname).get(value)
                return (w is not None), (float32(float32(boost) * w) if w is not None else 0.0)
            return _lookup(src, fname) == value, float32(boost)
        if kind == "terms":
            values = next(v for k, v in spec.items() if k != "boost")
            fname = next(k for k in spec if k != "boost")
            return _lookup(src, fname) in values, float32(spec.get("boost", 1.0))
        if kind == "bool":
            scores: list[float] = []
            for clause in _as_list(spec.get("must")):
                ok, s = self._eval(idx, clause, src, named)
                if not ok:
                    return False, 0.0
                scores.append(s)
            for clause in _as_list(spec.get("filter")):
                if not self._eval(idx, clause, src)[0]:
                    return False, 0.0
            should = [self._eval(idx, c, src, named) for c in _as_list(spec.get("should"))]
            if should and not spec.get("must") and not spec.get("filter") and not any(ok for ok, _ in should):
                return False, 0.0
            scores += [s for ok, s in should if ok]
            return True, lucene_score_sum(scores)
        raise _RequestError(400, "parsing_exception", f"unknown query [{kind}]")

    def _sparse_vector_query(
        self, idx: dict[str, Any], spec: dict[str, Any], src: dict[str, Any], named: list[str]
    ) -> tuple[bool, float]:
        if not self.is_es or self.vtuple < (8, 15):
            raise _RequestError(400, "parsing_exception", "unknown query [sparse_vector]")
        has_vector, has_inference = "query_vector" in spec, "inference_id" in spec
        if has_vector == has_inference or (has_vector and "query" in spec):
            raise _RequestError(
                400, "illegal_argument_exception", "[sparse_vector] requires one of [query_vector] or [inference_id]"
            )
        fname = spec["field"]
        ftype = self._field_type(idx, fname)
        if ftype != "sparse_vector":
            raise _RequestError(
                400, "illegal_argument_exception", f"[{fname}] must be type [sparse_vector] but is type [{ftype}]"
            )
        if has_inference:  # the text encoded by the endpoint, then scored as query_vector is
            spec = {**spec, "query_vector": self._infer("es", spec["inference_id"], spec["query"])}
        tokens = self._pruned(idx, fname, spec)
        ok, score = self._dot(self._features(src, fname), tokens)
        if ok and spec.get("_name"):
            named.append(spec["_name"])
        return ok, float32(score * spec.get("boost", 1.0))

    def _infer(self, engine: str, model: str, text: str) -> dict[str, float]:
        try:
            return self.encoded_query(engine, model, text)
        except InferenceError as err:
            raise _RequestError(err.status, err.etype, err.reason) from None

    def _semantic_query(self, idx: dict[str, Any], spec: dict[str, Any], src: dict[str, Any]) -> tuple[bool, float]:
        """A ``semantic`` query on a ``semantic_text`` field of sparse embeddings: the best chunk's
        dot product with the query's embedding, without pruning (the field's index_options)."""
        if not self.is_es:
            raise _RequestError(400, "parsing_exception", "unknown query [semantic]")
        doc_id = next((d for d, s in idx["docs"].items() if s is src), None)
        try:
            ok, query, chunks = self.semantic_score(idx, spec, doc_id)
        except InferenceError as err:
            raise _RequestError(err.status, err.etype, err.reason) from None
        if not ok:
            raise _RequestError(
                400, "illegal_argument_exception", f"Field [{spec['field']}] is not a semantic_text field"
            )
        best = [self._dot({k: lucene_feature_value(w) for k, w in c.items()}, query) for c in chunks]
        best = [s for matched, s in best if matched]
        return (bool(best), max(best) * float(spec.get("boost", 1.0)) if best else 0.0)

    def _pruned(self, idx: dict[str, Any], fname: str, spec: dict[str, Any]) -> dict[str, float]:
        """The query tokens a ``sparse_vector`` query scores with: all of them, or after token
        pruning (the query's ``prune``/``pruning_config``, else the field's ``index_options``, else
        the version's default)."""
        tokens = dict(spec["query_vector"])
        field_opts = self._field_mapping(idx, fname).get("index_options") or {}
        prune = spec.get("prune", field_opts.get("prune", self._prunes_by_default(idx)))
        if not prune or not tokens:
            return tokens
        config = {**DEFAULT_PRUNING, **(field_opts.get("pruning_config") or {}), **(spec.get("pruning_config") or {})}
        n_docs, doc_freq = self._field_stats(idx, fname)
        if not n_docs:
            return {}
        average = sum(doc_freq.values()) / n_docs / len(doc_freq)
        best = max(tokens.values())
        kept = {}
        for token, w in tokens.items():
            df = doc_freq.get(token, 0)
            keep = df > 0 and (
                df / n_docs < config["tokens_freq_ratio_threshold"] * average
                or w > config["tokens_weight_threshold"] * best
            )
            if keep != bool(config["only_score_pruned_tokens"]):
                kept[token] = w
        return kept

    def _seismic_candidate(self, idx: dict[str, Any], fname: str, inner: dict[str, Any], src: dict[str, Any]) -> bool:
        """Whether SEISMIC's approximate search finds ``src`` for this ``neural_sparse`` query
        (always, below the field's ``approximate_threshold``, where the engine searches exactly)."""
        params = (self._field_mapping(idx, fname).get("method") or {}).get("parameters") or {}
        n_docs = self._field_stats(idx, fname)[0]
        if n_docs < params.get("approximate_threshold", SEISMIC_APPROXIMATE_THRESHOLD):
            return True
        key = ("seismic", id(idx), fname, len(idx["docs"]), json.dumps(inner, sort_keys=True))
        found = self._cached(key, lambda: self._seismic_search(idx, fname, inner, params, n_docs))
        return id(src) in found

    def _seismic_search(
        self, idx: dict[str, Any], fname: str, inner: dict[str, Any], params: dict[str, Any], n_docs: int
    ) -> set[int]:
        """The documents (by identity) SEISMIC returns for a query, as neural-search documents and
        implements it: each token's posting list keeps its ``n_postings`` heaviest documents (by
        default ``max(160, 0.0005 x documents)``); a query walks the posting lists of its ``top_n``
        heaviest tokens only, scores every document found there (passing ``method_parameters.filter``)
        with the whole query, and keeps the best ``k`` (default 10). Not modelled: the clustering of
        posting lists and the summaries that let ``heap_factor`` skip clusters (every cluster is
        visited, SEISMIC's behaviour with a large ``heap_factor``) and the byte quantization."""
        method = inner.get("method_parameters") or {}
        tokens = inner["query_tokens"]
        n_postings = params.get("n_postings") or max(SEISMIC_MIN_POSTINGS, int(SEISMIC_POSTING_RATIO * n_docs))
        walked = sorted(tokens, key=lambda t: -tokens[t])[: method.get("top_n", SEISMIC_TOP_N)]
        flt = method.get("filter")
        found: dict[int, tuple[float, str]] = {}
        postings = self._postings(idx, fname)
        for token in walked:
            for _, doc_id in postings.get(token, [])[:n_postings]:
                src = idx["docs"][doc_id]
                if id(src) in found or (flt is not None and not self._eval(idx, flt, src)[0]):
                    continue
                found[id(src)] = (self._dot(self._features(src, fname), tokens)[1], doc_id)
        best = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[: method.get("k") or SEISMIC_K]
        return {ref for ref, _ in best}

    def _field_stats(self, idx: dict[str, Any], fname: str) -> tuple[int, dict[str, int]]:
        """(documents with the field, document frequency per token): what pruning reads from the
        index's terms dictionary; computed once per state of the index, not per scored document."""

        def stats() -> tuple[int, dict[str, int]]:
            docs = [d for d in (self._features(src, fname) for src in idx["docs"].values()) if d]
            doc_freq: dict[str, int] = defaultdict(int)
            for d in docs:
                for token in d:
                    doc_freq[token] += 1
            return len(docs), dict(doc_freq)

        return self._cached(("stats", id(idx), fname, len(idx["docs"])), stats)

    def _postings(self, idx: dict[str, Any], fname: str) -> dict[str, list[tuple[float, str]]]:
        """Per token, the (stored weight, id) of the documents holding it, heaviest first."""

        def build() -> dict[str, list[tuple[float, str]]]:
            out: dict[str, list[tuple[float, str]]] = defaultdict(list)
            for doc_id, src in idx["docs"].items():
                for token, w in self._features(src, fname).items():
                    out[token].append((w, doc_id))
            for posting in out.values():
                posting.sort(key=lambda p: (-p[0], p[1]))
            return dict(out)

        return self._cached(("postings", id(idx), fname, len(idx["docs"])), build)

    def _cached(self, key: tuple, make: Any) -> Any:
        if self._stats_seq_no != self.seq_no:
            self._stats_cache.clear()
            self._stats_seq_no = self.seq_no
        if key not in self._stats_cache:
            self._stats_cache[key] = make()
        return self._stats_cache[key]

    def _field_mapping(self, idx: dict[str, Any], path: str) -> dict[str, Any]:
        """The mapping of the field at a dotted ``path``; names may hold dots themselves
        (``subobjects: false``), so every split of the path is tried."""
        return _mapping_at(idx["mappings"].get("properties") or {}, path) or {}

    @staticmethod
    def _dot(doc: dict[str, float], query: dict[str, float]) -> tuple[bool, float]:
        """Score of a bool of FeatureField linear queries: float32 query weight x stored weight
        per shared token, summed as Lucene sums a disjunction."""
        shared = [k for k in query if k in doc]
        return bool(shared), lucene_score_sum([float32(float32(query[k]) * doc[k]) for k in shared])


def _bulk_sources(lines: list[Any], path_index: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(index, id, source) of a bulk body's index and create actions."""
    out, i = [], 0
    while i < len(lines):
        op, meta = next(iter(lines[i].items()))
        if op in ("index", "create"):
            out.append((meta.get("_index") or path_index, meta.get("_id"), lines[i + 1]))
        i += 2 if op in ("index", "create", "update") else 1
    return out


def _mapping_at(props: dict[str, Any], path: str) -> dict[str, Any] | None:
    if path in props:
        return props[path]
    parts = path.split(".")
    for cut in range(1, len(parts)):
        head = ".".join(parts[:cut])
        if head in props:
            found = _mapping_at(props[head].get("properties") or {}, ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def _rebuild_vectors(src: dict[str, Any], kinds: dict[str, str], prefix: str = "") -> dict[str, Any]:
    """``src`` with the vector fields at ``kinds`` (dotted path -> type) as the index rebuilds them:
    sparse weights through the FeatureField round trip, dense values in float32."""
    out: dict[str, Any] = {}
    for key, value in src.items():
        path = prefix + key
        kind = kinds.get(path)
        if kind == "sparse_vector":
            parts = value if isinstance(value, list) else [value]
            merged: dict[str, float] = {}
            for part in parts:
                for token, w in (part or {}).items():
                    merged[token] = max(merged.get(token, 0.0), lucene_feature_value(w))
            out[key] = merged
        elif kind in ("dense_vector", "rank_vectors") and isinstance(value, list):
            out[key] = json.loads(json.dumps(value), parse_float=float32)
        elif isinstance(value, dict):
            out[key] = _rebuild_vectors(value, kinds, path + ".")
        elif isinstance(value, list):
            out[key] = [_rebuild_vectors(v, kinds, path + ".") if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def _as_list(x: Any) -> list:
    return [] if x is None else x if isinstance(x, list) else [x]


def _merge_properties(into: dict[str, Any], new: dict[str, Any]) -> None:
    for name, prop in new.items():
        if name in into and "properties" in prop:
            _merge_properties(into[name].setdefault("properties", {}), prop["properties"])
        else:
            into[name] = prop


class FakeServer:
    """Runs a :class:`FakeEngine` behind ``http.server`` on 127.0.0.1 in a thread."""

    def __init__(self, engine: FakeEngine, keep_alive: bool = True) -> None:
        self.engine = engine
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, resp_headers, payload = outer.engine.handle(self.command, self.path, headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in resp_headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                if not keep_alive:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _do

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- live tests: the corpus, the exact reference and the comparison -------------------------------


def encode_rows(encode, texts: list[str], tokenizer, batch_size: int = 256) -> list:
    """Encode ``texts`` with ``encode`` (``encoder.encode_document`` / ``encode_query``) and turn each
    sparse row into a SparseVector whose tokens come from ``tokenizer.convert_ids_to_tokens``."""
    import torch
    from sparsebridge.connector import SparseVector

    out = []
    for start in range(0, len(texts), batch_size):
        batch = encode(texts[start : start + batch_size])
        batch = batch.coalesce() if batch.layout == torch.sparse_coo else batch.to_sparse_coo().coalesce()
        rows, cols = batch.indices().tolist()
        values = batch.values().float().tolist()
        per_row: list[list[tuple[int, float]]] = [[] for _ in range(batch.shape[0])]
        for r, c, v in zip(rows, cols, values):
            per_row[r].append((c, v))
        for pairs in per_row:
            ids = [c for c, _ in pairs]
            tokens = tokenizer.convert_ids_to_tokens(ids)
            out.append(SparseVector.from_pairs((i, t, v) for (i, v), t in zip(pairs, tokens)))
    return out


def exact_scores(doc_vectors: dict[str, Any], query: Any) -> dict[str, float]:
    """Exact dot products (float64) of ``query`` with every document sharing a token id with it."""
    postings = _postings(id(doc_vectors), doc_vectors)
    scores: dict[str, float] = defaultdict(float)
    for i, w in zip(query.indices, query.values):
        for doc_id, dw in postings.get(i, ()):
            scores[doc_id] += float(w) * dw
    return dict(scores)


_POSTINGS: dict[int, dict[int, list[tuple[str, float]]]] = {}


def _postings(key: int, doc_vectors: dict[str, Any]) -> dict[int, list[tuple[str, float]]]:
    if key not in _POSTINGS:
        index: dict[int, list[tuple[str, float]]] = defaultdict(list)
        for doc_id, vec in doc_vectors.items():
            for i, w in zip(vec.indices, vec.values):
                index[i].append((doc_id, float(w)))
        _POSTINGS[key] = index
    return _POSTINGS[key]


# Lucene keeps a feature weight in 9 significant bits (``FeatureField``: the float's bits >> 15),
# truncating, so a stored document weight is up to 2**-8 (0.39%) below the real one; query weights
# travel as float32. 1% covers both with room.
SCORE_RTOL = 0.01


def compare_top_k(hits: list[tuple[str, float]], exact: dict[str, float], k: int) -> list[str]:
    """Problems (empty when fine) between an engine's top ``k`` and the exact ranking.

    Scores must match within :data:`SCORE_RTOL`; documents whose exact scores lie within that
    tolerance of each other are near-ties and may swap, also across the cut at rank ``k``.
    """
    problems = []
    ranked = sorted(exact.items(), key=lambda kv: -kv[1])
    expected_n = min(k, len(ranked))
    if len(hits) != expected_n:
        problems.append(f"{len(hits)} hits, expected {expected_n}")
    if not ranked:
        return problems
    kth = ranked[expected_n - 1][1]
    low, high = kth * (1 - SCORE_RTOL), kth * (1 + SCORE_RTOL)
    got = {doc_id for doc_id, _ in hits}
    for doc_id, score in hits:
        true = exact.get(doc_id)
        if true is None:
            problems.append(f"{doc_id} shares no token with the query")
        elif abs(score - true) > SCORE_RTOL * max(abs(true), 1e-6):
            problems.append(f"{doc_id}: engine score {score:.6g}, exact {true:.6g}")
        elif true < low:
            problems.append(f"{doc_id} (exact {true:.6g}) is below the exact top-{k} cut {kth:.6g}")
    for doc_id, score in ranked[:expected_n]:
        if score > high and doc_id not in got:
            problems.append(f"{doc_id} (exact {score:.6g}) is missing from the engine's top {k}")
    for (a, _), (b, _) in zip(hits, hits[1:]):
        ta, tb = exact.get(a, 0.0), exact.get(b, 0.0)
        if ta < tb * (1 - 2 * SCORE_RTOL):
            problems.append(f"{a} (exact {ta:.6g}) ranked above {b} (exact {tb:.6g})")
    return problems
