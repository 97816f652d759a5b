"""The strict specification check refuses what an engine would refuse: a misspelt key, a wrong type.

No Elasticsearch or OpenSearch server can run here, so the official specifications in
``shared/specs`` (``spec_validation.py``) are the guard on every request body the connectors
build. Read as plain JSON Schema those specifications accept any extra key (none of the
Elasticsearch OpenAPI's object schemas sets ``additionalProperties: false``), so the validator
closes every object the specification does not mark as an open map. For each request kind the
connectors send, these tests hold one correct body, misspelt keys at several depths, and wrong
types; then they run the connectors against the engine double and validate every request *and*
every answer it gave against the specifications' response schemas.
"""

from __future__ import annotations

import copy
import json

import pytest
from lucene_testkit import FakeEngine, FakeServer
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector
from sparsebridge_elasticsearch import ElasticsearchConnector
from sparsebridge_opensearch import OpenSearchConnector
from spec_validation import ObjectClosure, SpecViolation, elasticsearch_validator, opensearch_validator


@pytest.fixture(scope="module")
def es(specs_dir):
    return elasticsearch_validator(specs_dir)


@pytest.fixture(scope="module")
def os_(specs_dir):
    return opensearch_validator(specs_dir)


def edit(body: dict, path: str, value=None, *, rename: str | None = None) -> dict:
    """A copy of ``body`` with the key at ``path`` (``a/b/0/c``) renamed or its value replaced."""
    out = copy.deepcopy(body)
    *parents, last = path.split("/")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return out


# --- Elasticsearch -------------------------------------------------------------------------------

ES_CREATE = {
    "mappings": {
        "properties": {
            "sparse": {
                "type": "sparse_vector",
                "index_options": {"prune": False},
            },
            "dense": {"type": "dense_vector", "dims": 3, "index": True, "similarity": "cosine"},
            "text": {"type": "text"},
            "payload": {"properties": {"lang": {"type": "keyword"}, "year": {"type": "integer"}}},
        },
        "_meta": {"model": "splade", "sparsebridge": {"sparse_keys": "token", "any": ["thing"]}},
    },
    "settings": {"number_of_shards": 1, "number_of_replicas": 0},
}
ES_SPARSE_QUERY = {
    "sparse_vector": {
        "field": "sparse",
        "query_vector": {"cat": 1.0, "u.s.": 0.5, "##s": 0.25},
        "prune": True,
        "pruning_config": {"tokens_freq_ratio_threshold": 5, "tokens_weight_threshold": 0.4},
    }
}
ES_FILTERED = {
    "bool": {
        "must": [ES_SPARSE_QUERY],
        "filter": [{"terms": {"payload.lang": ["en", "fr"]}}, {"term": {"payload.year": {"value": 1999}}}],
    }
}
ES_SEARCH = {
    "size": 3,
    "query": ES_FILTERED,
    "_source": {"includes": ["text", "payload"], "exclude_vectors": False},
    "track_total_hits": False,
}
ES_KNN = {"field": "dense", "query_vector": [0.1, 0.2, 0.3], "k": 3, "num_candidates": 10}
ES_RRF = {
    "size": 3,
    "retriever": {
        "rrf": {
            "retrievers": [
                {"standard": {"query": ES_FILTERED}},
                {"knn": {**ES_KNN, "filter": [{"term": {"payload.year": {"value": 1999}}}]}},
            ],
            "rank_constant": 60,
            "rank_window_size": 10,
        }
    },
}
ES_LINEAR = {
    "retriever": {
        "linear": {
            "retrievers": [
                {"retriever": {"standard": {"query": ES_SPARSE_QUERY}}, "weight": 0.7, "normalizer": "minmax"},
                {"retriever": {"knn": ES_KNN}, "weight": 0.3, "normalizer": "minmax"},
            ],
            "rank_window_size": 10,
        }
    }
}
ES_KNN_SEARCH = {"knn": {**ES_KNN, "filter": {"term": {"payload.lang": {"value": "en"}}}}, "size": 3}
ES_SEARCH_BODY = "_global.search._types.SearchRequestBody"

ES_CASES = [
    # (name, schema, correct body, [(path, rename-to)] misspellings, [(path, wrong value)] wrong types)
    (
        "index create",
        "request:indices.create",
        ES_CREATE,
        [
            ("mappings/properties", "propertys"),
            ("mappings/_meta", "meta"),
            ("mappings/properties/sparse/index_options", "index_option"),
            ("mappings/properties/sparse/index_options/prune", "prun"),
            ("mappings/properties/dense/similarity", "similarty"),
            ("mappings/properties/payload/properties", "propertys"),
            ("mappings", "mapping"),
        ],
        [
            ("mappings/properties/dense/dims", "3"),
            ("mappings/properties/sparse/type", "sparse_vectr"),
            ("mappings/properties/sparse/index_options/prune", "no"),
            ("settings/number_of_shards", [1]),
        ],
    ),
    (
        "sparse_vector query",
        "_types.query_dsl.QueryContainer",
        ES_SPARSE_QUERY,
        [
            ("sparse_vector", "sparse_vectr"),
            ("sparse_vector/prune", "prun"),
            ("sparse_vector/query_vector", "query_vectors"),
            ("sparse_vector/pruning_config/tokens_weight_threshold", "tokens_weight_treshold"),
        ],
        [
            ("sparse_vector/query_vector/cat", "high"),
            ("sparse_vector/prune", "no"),
            ("sparse_vector/field", 7),
            ("sparse_vector/pruning_config", 5),
        ],
    ),
    (
        "search body",
        ES_SEARCH_BODY,
        ES_SEARCH,
        [
            ("query", "querry"),
            ("query/bool/filter", "filtre"),
            ("query/bool/filter/1/term/payload.year/value", "valu"),
            ("_source/includes", "include"),
            ("_source/exclude_vectors", "exclude_vector"),
            ("track_total_hits", "track_total_hit"),
        ],
        [("size", "ten"), ("query/bool/must", "all"), ("_source/exclude_vectors", "no")],
    ),
    (
        "rrf retriever",
        ES_SEARCH_BODY,
        ES_RRF,
        [
            ("retriever/rrf", "rff"),
            ("retriever/rrf/rank_constant", "rank_constnt"),
            ("retriever/rrf/retrievers", "retreivers"),
            ("retriever/rrf/retrievers/0/standard/query", "querry"),
            ("retriever/rrf/retrievers/1/knn/num_candidates", "num_candidate"),
        ],
        [("retriever/rrf/rank_constant", "60"), ("retriever/rrf/retrievers/1/knn/k", "three")],
    ),
    (
        "linear retriever",
        ES_SEARCH_BODY,
        ES_LINEAR,
        [
            ("retriever/linear/retrievers/0/weight", "wieght"),
            ("retriever/linear/retrievers/1/normalizer", "normaliser"),
            ("retriever/linear/retrievers/0/retriever/standard", "standart"),
        ],
        [("retriever/linear/retrievers/0/weight", "heavy"), ("retriever/linear/retrievers", {"a": 1})],
    ),
    (
        "knn search",
        ES_SEARCH_BODY,
        ES_KNN_SEARCH,
        [("knn/query_vector", "query_vectr"), ("knn/filter/term/payload.lang/value", "valeu")],
        [("knn/query_vector", "0.1,0.2"), ("knn/k", "3")],
    ),
    (
        "bulk action",
        "_global.bulk.OperationContainer",
        {"index": {"_index": "docs", "_id": "d1"}},
        [("index/_id", "_idd"), ("index", "indx")],
        [("index/_id", 1.5), ("index/_index", ["docs"])],
    ),
    (
        "msearch header",
        "_global.msearch.MultisearchHeader",
        {"index": "docs"},
        [("index", "indx")],
        [("index", 7)],
    ),
]


def _refused(validator, body, name) -> None:
    with pytest.raises(SpecViolation):
        validator.validate(body, name)


@pytest.mark.parametrize("case", ES_CASES, ids=[c[0] for c in ES_CASES])
def test_elasticsearch_request_kinds_refuse_misspelt_keys_and_wrong_types(es, case):
    _name, schema, good, misspelt, wrong = case
    es.validate(good, schema)
    for path, new_name in misspelt:
        _refused(es, edit(good, path, rename=new_name), schema)
    for path, value in wrong:
        _refused(es, edit(good, path, value), schema)


def test_elasticsearch_open_maps_stay_open(es):
    """``properties``, ``_meta``, ``query_vector``, term/terms field names take any key."""
    body = edit(ES_CREATE, "mappings/properties/anything at all", {"type": "keyword"})
    body = edit(body, "mappings/_meta/whatever", {"deep": [1, {"x": None}]})
    es.validate(body, "request:indices.create")
    query = edit(ES_SPARSE_QUERY, "sparse_vector/query_vector/5.0k", 2.5)
    es.validate(query, "_types.query_dsl.QueryContainer")
    es.validate({"terms": {"any.field": ["a"], "boost": 2.0}}, "_types.query_dsl.QueryContainer")


def test_typescript_decides_where_the_openapi_file_cannot(es):
    """Forms the OpenAPI file drops or leaves ambiguous, read from the TypeScript source."""
    q = "_types.query_dsl.QueryContainer"
    # Shortcuts: ``term?: Partial<Record<Field, QueryDslTermQuery | FieldValue>>`` and the like.
    es.validate({"bool": {"filter": [{"term": {"payload.lang": "en"}}, {"match": {"text": "cat"}}]}}, q)
    _refused(es, {"term": {"payload.lang": {"value": "en", "bost": 2}}}, q)  # the long form stays closed
    _refused(es, {"term": {"payload.lang": ["en"]}}, q)
    # TypeScript unions are inclusive: ``{"gte": 1999}`` is both a Number- and a LongNumberRangeQuery.
    es.validate({"range": {"payload.year": {"gte": 1999}}}, q)
    _refused(es, {"range": {"payload.year": {"gtee": 1999}}}, q)
    # ``SearchSourceConfig = boolean | SearchSourceFilter | Fields``.
    es.validate({"_source": ["text", "payload.*"]}, ES_SEARCH_BODY)
    # ``QueryDslRankFeatureFunction { [key: string]: never }``: an object that takes no key.
    es.validate({"rank_feature": {"field": "f", "linear": {}}}, q)
    _refused(es, {"rank_feature": {"field": "f", "linear": {"factor": 2}}}, q)
    # ``ErrorCause = ErrorCauseKeys & { [property: string]: any }``: details beyond the known keys.
    es.validate(
        {"error": {"type": "x", "reason": "y", "index": "docs", "shard": 0}, "status": 400}, "_types.ErrorResponseBase"
    )


def test_elasticsearch_ndjson_bodies_are_checked_line_by_line(es):
    bulk = [{"index": {"_index": "docs", "_id": "d1"}}, {"sparse": {"cat": 1.0}}, {"delete": {"_id": "d2"}}]
    es.validate_request("POST", "/_bulk", _ndjson(bulk))
    with pytest.raises(SpecViolation):
        es.validate_request("POST", "/_bulk", _ndjson([{"index": {"_index": "docs", "_idd": "d1"}}, {}]))
    with pytest.raises(SpecViolation):
        es.validate_request("POST", "/_bulk", _ndjson([{"index": {"_id": "d1"}}, ["not", "an", "object"]]))
    lines = [{"index": "docs"}, ES_SEARCH, {"index": "docs"}, ES_RRF]
    es.validate_request("POST", "/_msearch", _ndjson(lines))
    for bad in (edit(ES_SEARCH, "query", rename="querry"), edit(ES_RRF, "retriever/rrf/rank_constant", "60")):
        with pytest.raises(SpecViolation):
            es.validate_request("POST", "/_msearch", _ndjson([{"index": "docs"}, bad]))
    with pytest.raises(SpecViolation):
        es.validate_request("POST", "/_msearch", _ndjson([{"indx": "docs"}, ES_SEARCH]))


# --- OpenSearch ----------------------------------------------------------------------------------

OS_CREATE = {
    "settings": {"index": {"number_of_replicas": 0, "knn": True}},
    "mappings": {
        "properties": {
            "sparse": {"type": "rank_features"},
            "dense": {"type": "knn_vector", "dimension": 3},
            "text": {"type": "text"},
            "payload": {"properties": {"lang": {"type": "keyword"}}},
        },
        "_meta": {"model": "splade", "sparsebridge": {"sparse_keys": "token"}},
    },
}
OS_SEISMIC = {
    "settings": {"index": {"sparse": True}},
    "mappings": {
        "properties": {
            "sparse": {
                "type": "sparse_vector",
                "method": {
                    "name": "seismic",
                    "parameters": {"n_postings": 300, "cluster_ratio": 0.1, "quantization_ceiling_ingest": 5.0},
                },
            }
        }
    },
}
OS_NEURAL = {"neural_sparse": {"sparse": {"query_tokens": {"cat": 1.0, "u.s.": 2.0}}}}
OS_NEURAL_SEISMIC = {
    "neural_sparse": {
        "sparse": {
            "query_tokens": {"4937": 1.0},
            "method_parameters": {"top_n": 2, "k": 3, "heap_factor": 1.2, "filter": {"term": {"payload.lang": "fr"}}},
        }
    }
}
OS_KNN = {"knn": {"dense": {"vector": [0.1, 0.2, 0.3], "k": 3, "filter": {"term": {"payload.lang": "en"}}}}}
OS_HYBRID = {
    "size": 3,
    "query": {
        "hybrid": {
            "queries": [OS_NEURAL, OS_KNN],
            "filter": {"term": {"payload.lang": "en"}},
        }
    },
    "_source": {"includes": ["text", "payload"]},
}
OS_NORMALIZATION = {
    "description": "sparsebridge hybrid",
    "phase_results_processors": [
        {
            "normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.7, 0.3]}},
            }
        }
    ],
}
OS_RRF = {
    "phase_results_processors": [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}},
    ]
}
OS_PIPELINE = "search_pipeline._common:SearchPipelineStructure"
OS_BODY = "_core.msearch:MultisearchBody"

OS_CASES = [
    (
        "index create (rank_features, knn_vector)",
        "request:indices/indices.create",
        OS_CREATE,
        [
            ("mappings/properties", "propertys"),
            ("mappings/properties/dense/dimension", "dimensoin"),
            ("mappings", "mapping"),
            ("mappings/_meta", "meta"),
        ],
        [
            ("mappings/properties/sparse/type", "rank_feature_s"),
            ("mappings/properties/dense/dimension", "3"),
            ("settings/index/knn", 1),
        ],
    ),
    (
        "index create (SEISMIC sparse_vector)",
        "request:indices/indices.create",
        OS_SEISMIC,
        [
            ("mappings/properties/sparse/method/parameters/n_postings", "n_posting"),
            ("mappings/properties/sparse/method", "methd"),
        ],
        [
            ("mappings/properties/sparse/method/parameters/cluster_ratio", 2),
            ("settings/index/sparse", "yes"),
        ],
    ),
    (
        "neural_sparse query",
        "_common.query_dsl:QueryContainer",
        OS_NEURAL,
        [("neural_sparse", "neural_sprase"), ("neural_sparse/sparse/query_tokens", "query_tokenz")],
        [("neural_sparse/sparse/query_tokens/cat", "high"), ("neural_sparse/sparse/query_tokens", ["cat"])],
    ),
    (
        "neural_sparse on SEISMIC",
        "_common.query_dsl:QueryContainer",
        OS_NEURAL_SEISMIC,
        [
            ("neural_sparse/sparse/method_parameters/top_n", "topn"),
            ("neural_sparse/sparse/method_parameters/filter/term", "trem"),
        ],
        [("neural_sparse/sparse/method_parameters/k", 0)],
    ),
    (
        "knn query",
        "_common.query_dsl:QueryContainer",
        OS_KNN,
        [("knn/dense/vector", "vectr"), ("knn/dense/filter", "filtre")],
        [("knn/dense/k", "three"), ("knn/dense/vector", "0.1")],
    ),
    (
        "hybrid query",
        OS_BODY,
        OS_HYBRID,
        [
            ("query", "querry"),
            ("query/hybrid/queries", "querys"),
            ("query/hybrid/queries/0/neural_sparse/sparse/query_tokens", "query_tokenz"),
            ("query/hybrid/queries/1/knn/dense/vector", "vectr"),
            ("_source/includes", "include"),
        ],
        [("query/hybrid/queries", {"a": 1}), ("size", "ten")],
    ),
    (
        "normalization-processor pipeline",
        OS_PIPELINE,
        OS_NORMALIZATION,
        [
            ("phase_results_processors", "phase_result_processors"),
            ("phase_results_processors/0/normalization-processor/normalization", "normalisation"),
            ("phase_results_processors/0/normalization-processor/combination/parameters/weights", "weigths"),
            ("phase_results_processors/0/normalization-processor/normalization/technique", "techniqe"),
        ],
        [
            ("phase_results_processors/0/normalization-processor/normalization/technique", "minmax"),
            ("phase_results_processors/0/normalization-processor/combination/parameters/weights", "0.7,0.3"),
        ],
    ),
    (
        "score-ranker-processor pipeline",
        OS_PIPELINE,
        OS_RRF,
        [
            ("phase_results_processors/0/score-ranker-processor/combination/rank_constant", "rank_constnt"),
            ("phase_results_processors/0/score-ranker-processor", "score_ranker_processor"),
        ],
        [
            ("phase_results_processors/0/score-ranker-processor/combination/rank_constant", "60"),
            ("phase_results_processors/0/score-ranker-processor/combination/technique", "dbsf"),
        ],
    ),
    (
        "bulk action",
        "_core.bulk:OperationContainer",
        {"index": {"_index": "docs", "_id": "d1"}},
        [("index/_id", "_idd"), ("index", "indx")],
        [("index/_index", ["docs"])],
    ),
    (
        "msearch header",
        "_core.msearch:MultisearchHeader",
        {"index": "docs"},
        [("index", "indx")],
        [("index", {"a": 1})],
    ),
]


@pytest.mark.parametrize("case", OS_CASES, ids=[c[0] for c in OS_CASES])
def test_opensearch_request_kinds_refuse_misspelt_keys_and_wrong_types(os_, case):
    _name, schema, good, misspelt, wrong = case
    os_.validate(good, schema)
    for path, new_name in misspelt:
        _refused(os_, edit(good, path, rename=new_name), schema)
    for path, value in wrong:
        _refused(os_, edit(good, path, value), schema)


def test_opensearch_open_maps_stay_open(os_):
    os_.validate(edit(OS_NEURAL, "neural_sparse/sparse/query_tokens/5.0k", 3.0), "_common.query_dsl:QueryContainer")
    body = edit(OS_CREATE, "mappings/properties/any name", {"type": "keyword"})
    os_.validate(edit(body, "mappings/_meta/free", {"form": [1]}), "request:indices/indices.create")


def test_opensearch_pipeline_and_hybrid_requests_route_to_their_schemas(os_):
    os_.validate_request("PUT", "/_search/pipeline/sparsebridge-hybrid", json.dumps(OS_NORMALIZATION).encode())
    with pytest.raises(SpecViolation):
        bad = edit(OS_RRF, "phase_results_processors/0/score-ranker-processor/combination/rank_constant", "60")
        os_.validate_request("PUT", "/_search/pipeline/p", json.dumps(bad).encode())
    os_.validate_request("POST", "/_msearch", _ndjson([{"index": "docs"}, OS_HYBRID]))
    with pytest.raises(SpecViolation):
        bad = edit(OS_HYBRID, "query/hybrid/queries/0/neural_sparse", rename="neural_sprase")
        os_.validate_request("POST", "/_msearch", _ndjson([{"index": "docs"}, bad]))


# --- composition under closure -------------------------------------------------------------------


def _toy_validator():
    """A tiny document exercising ``allOf`` / ``oneOf`` / ``anyOf`` / open maps, closed as the
    engines' documents are."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = {
        "components": {
            "schemas": {
                "Base": {"type": "object", "properties": {"boost": {"type": "number"}}},
                "Own": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"properties": {"field": {}}}]},
                "A": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                "B": {"type": "object", "properties": {"b": {"type": "integer"}}},
                "Either": {"oneOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]},
                "Any": {"anyOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]},
                "Map": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Own"}},
                "Holder": {
                    "type": "object",
                    "properties": {
                        "own": {"$ref": "#/components/schemas/Own"},
                        "either": {"$ref": "#/components/schemas/Either"},
                        "any": {"$ref": "#/components/schemas/Any"},
                        "map": {"$ref": "#/components/schemas/Map"},
                        "free": {"type": "object"},
                    },
                },
            }
        }
    }
    closure = ObjectClosure({"toy": doc}, lambda key, ref: (key, doc["components"]["schemas"][ref.rsplit("/", 1)[1]]))
    closure.close_documents()
    registry = Registry().with_resource("urn:toy", Resource.from_contents(doc, default_specification=DRAFT202012))
    schema = {"$ref": "urn:toy#/components/schemas/Holder", "unevaluatedProperties": False}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize(
    "instance, ok",
    [
        ({"own": {"boost": 1.0, "field": "x"}}, True),  # keys of both allOf members
        ({"own": {"boost": 1.0, "feld": "x"}}, False),
        ({"either": {"a": 1}}, True),
        ({"either": {"b": 1}}, True),
        ({"either": {"a": 1, "b": 1}}, False),  # "b" belongs to the branch that did not match
        ({"any": {"a": 1}}, True),
        ({"any": {"a": 1, "b": 1}}, False),  # no single branch allows both
        ({"map": {"any key": {"field": 1}}}, True),
        ({"map": {"any key": {"fild": 1}}}, False),
        ({"free": {"whatever": [1]}}, True),
        ({"holder_typo": 1}, False),
    ],
)
def test_closure_follows_composition(instance, ok):
    assert _toy_validator().is_valid(instance) is ok


# --- the connectors' real traffic, requests and answers --------------------------------------------

META = {"model": "m", "vocab_size": 30522, "vocab_fingerprint": "f00d"}


def _vec(weights: dict[str, float]) -> SparseVector:
    ids = {"cat": 4937, "dog": 3899, "u.s.": 1057, "mat": 13523}
    return SparseVector.from_pairs((ids[t], t, w) for t, w in weights.items())


def _ndjson(lines: list) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


FLOWS = [
    ("elasticsearch 9.1", ElasticsearchConnector, dict(flavor="elasticsearch", version="9.1.0"), {}),
    ("elasticsearch 9.2", ElasticsearchConnector, dict(flavor="elasticsearch", version="9.2.0"), {}),
    ("elasticsearch 8.13", ElasticsearchConnector, dict(flavor="elasticsearch", version="8.13.4"), {}),
    ("opensearch rank_features", OpenSearchConnector, dict(flavor="opensearch", version="3.3.0"), {}),
    (
        "opensearch seismic",
        OpenSearchConnector,
        dict(flavor="opensearch", version="3.3.0"),
        {"sparse_field_type": "sparse_vector"},
    ),
]


@pytest.mark.parametrize("flow", FLOWS, ids=[f[0] for f in FLOWS])
def test_every_request_and_answer_of_a_session_matches_the_specs(es, os_, flow):
    _name, connector, engine_kw, options = flow
    validator = es if engine_kw["flavor"] == "elasticsearch" else os_
    engine = FakeEngine(**engine_kw)
    with FakeServer(engine) as srv, connector(url=srv.url, max_retries=0, **options) as conn:
        conn.ensure_index(IndexSpec("docs", payload_fields={"lang": "keyword"}, metadata=META))
        conn.write(
            [
                Record("a", "cat text", _vec({"cat": 1.5, "u.s.": 0.5}), {"lang": "en"}),
                Record("b", "dog text", _vec({"dog": 2.0}), {"lang": "fr"}),
            ]
        )
        results = conn.search(
            [Query(sparse=_vec({"cat": 1.0})), Query(sparse=_vec({"dog": 1.0}), filter={"lang": "fr"})],
            SearchOptions(top_k=2),
        )
        assert [[h.id for h in r.hits] for r in results] == [["a"], ["b"]]
        conn.get(["a", "zz"])
        conn.count()
        conn.delete(["a", "never-there"])
        conn.ensure_index(IndexSpec("docs", payload_fields={"lang": "keyword", "year": "integer"}, metadata=META))
        conn.drop()
        assert conn.count() == 0  # answered 404 index_not_found_exception
    statuses = set()
    for req in engine.requests:
        validator.validate_request(req.method, req.path, req.body)
        validator.validate_response(req.method, req.path, req.status, req.response)
        statuses.add(req.status)
    assert 404 in statuses and 200 in statuses  # error answers were checked too


def test_response_validator_refuses_wrong_answers(es, os_):
    good = {
        "took": 1,
        "errors": False,
        "items": [{"delete": {"_index": "docs", "_id": "x", "status": 404, "result": "not_found"}}],
    }
    for validator, name in ((es, "response:bulk-200"), (os_, "response:_core/bulk@200")):
        validator.validate(good, name)
        _refused(validator, edit(good, "errors", rename="erors"), name)
        _refused(validator, edit(good, "items/0/delete/status", "404"), name)
        _refused(validator, edit(good, "items/0/delete", rename="remove"), name)
    with pytest.raises(SpecViolation):
        es.validate_response("POST", "/docs/_count", 200, {"count": "3", "_shards": {}})
    with pytest.raises(SpecViolation):
        os_.validate_response("PUT", "/docs", 400, {"eror": {"type": "x", "reason": "y"}, "status": 400})
