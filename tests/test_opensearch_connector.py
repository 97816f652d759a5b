"""The ``opensearch`` connector against the official OpenSearch API specification.

No OpenSearch can run here, so the real ``opensearch-py`` client talks over HTTP to a local stand-in
server on 127.0.0.1 (``http.server`` in a thread, see ``lucene_testkit.py``) that answers as the
engine documents and records every request. Every body the client sent is validated against the
multi-file OpenAPI YAML in ``shared/specs/opensearch/spec`` (``spec_validation.py``; the SEISMIC
``sparse_vector`` field and ``neural_sparse.method_parameters``, absent from that spec, are checked
against schemas transcribed from the OpenSearch documentation). Negative tests show the validator
rejects wrong bodies.
"""

from __future__ import annotations

import pytest
from lucene_testkit import FakeEngine, FakeServer, lucene_feature_value
from sparsebridge.connector import (
    ConnectorError,
    IndexMismatchError,
    IndexSpec,
    Query,
    Record,
    SearchOptions,
    SparseVector,
)
from sparsebridge.plugins import get_connectors
from sparsebridge_opensearch import OpenSearchConnector
from spec_validation import SpecViolation, opensearch_validator

VOCAB = {"the": 1996, "cat": 4937, "sat": 2938, "u.s.": 1057, "mat": 13523, "dog": 3899, "##s": 2015}
META = {"model": "splade-tiny", "vocab_size": 30522, "vocab_fingerprint": "f00d"}


def vec(weights: dict[str, float]) -> SparseVector:
    return SparseVector.from_pairs((VOCAB[t], t, w) for t, w in weights.items())


DOCS = [
    Record("d1", "the cat sat", vec({"cat": 1.5, "sat": 0.5, "u.s.": 0.2}), {"lang": "en", "year": 2001}),
    Record("d2", "the dog", vec({"dog": 2.0, "the": 0.1}), {"lang": "en", "year": 1999}),
    Record("d3", "u.s. mat", vec({"u.s.": 1.2, "mat": 0.9}), {"lang": "fr", "year": 2001}),
    Record("d4", "cats", vec({"cat": 0.4, "##s": 0.3}), {"lang": "de", "year": 2010}),
]


def spec(**kw) -> IndexSpec:
    base = dict(name="docs", payload_fields={"lang": "keyword", "year": "integer"}, metadata=META)
    base.update(kw)
    return IndexSpec(**base)


def brute_force(query: SparseVector) -> list[tuple[str, float]]:
    """Exact ranking over the weights Lucene stores (a FeatureField keeps 9 significant bits)."""
    q = query.as_index_dict()
    scored = [
        (d.id, sum(lucene_feature_value(w) * q.get(i, 0.0) for i, w in d.sparse.as_index_dict().items())) for d in DOCS
    ]
    return sorted([s for s in scored if s[1] > 0], key=lambda s: (-s[1], s[0]))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(flavor="opensearch", version="3.3.0")


@pytest.fixture
def server(engine):
    with FakeServer(engine) as srv:
        yield srv


@pytest.fixture
def conn(server):
    with OpenSearchConnector(url=server.url, initial_backoff=0.001, max_backoff=0.002) as c:
        yield c


@pytest.fixture
def seismic(server):
    params = {"n_postings": 300, "cluster_ratio": 0.1, "summary_prune_ratio": 0.4}
    with OpenSearchConnector(url=server.url, sparse_field_type="sparse_vector", **params) as c:
        yield c


@pytest.fixture(scope="module")
def validator(specs_dir):
    return opensearch_validator(specs_dir)


def validate_all(engine: FakeEngine, validator) -> dict[str, int]:
    seen: dict[str, int] = {}
    for req in engine.requests:
        api = validator.validate_request(req.method, req.path, req.body)
        seen[api] = seen.get(api, 0) + 1
    return seen


def test_registered_through_the_entry_point():
    assert get_connectors()["opensearch"] is OpenSearchConnector


def test_rank_features_index_body(conn, engine, validator):
    conn.ensure_index(spec(dense_field="dense", dense_size=4, options={"number_of_replicas": 0}))
    (create,) = engine.calls(r"^/docs$", "PUT")
    validator.validate_request("PUT", create.path, create.body)
    body = create.json()
    props = body["mappings"]["properties"]
    assert props["sparse"] == {"type": "rank_features"}
    assert props["dense"] == {
        "type": "knn_vector",
        "dimension": 4,
        "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
    }
    assert body["settings"] == {"index": {"number_of_replicas": 0, "knn": True}}
    assert conn.index_metadata() == META


def test_every_request_body_validates_against_the_spec(conn, engine, validator):
    conn.ensure_index(spec())
    assert not conn.write(DOCS).failed
    conn.search([Query(sparse=vec({"cat": 1.0})), Query(sparse=vec({"dog": 90.0}), filter={"lang": "en"})])
    conn.get(["d1", "nope"])
    conn.delete(["d4"])
    conn.ensure_index(spec(payload_fields={"lang": "keyword", "year": "integer", "score": "float"}))
    seen = validate_all(engine, validator)
    for api in (
        "request:indices/indices.create",
        "bulk",
        "msearch",
        "request:_core/mget",
        "request:indices/indices.put_mapping",
    ):
        assert seen.get(api), f"no {api} request was validated: {seen}"


def test_rank_features_documents_are_keyed_by_token(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS[:1])
    lines = engine.calls(r"/_bulk$")[0].lines()
    assert validator.validate_bulk(lines) == 1
    assert lines[1]["sparse"] == {"cat": 1.5, "sat": 0.5, "u.s.": 0.2}


def test_neural_sparse_queries_in_one_msearch_rank_by_dot_product(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS)
    queries = [Query(sparse=vec({"cat": 1.0, "u.s.": 2.0})), Query(sparse=vec({"cat": 3.0}), filter={"year": 2010})]
    results = conn.search(queries, SearchOptions(top_k=2))
    (msearch,) = engine.calls(r"/_msearch$")
    lines = msearch.lines()
    assert validator.validate_msearch(lines) == 2
    assert lines[1]["query"] == {"neural_sparse": {"sparse": {"query_tokens": {"cat": 1.0, "u.s.": 2.0}}}}
    assert lines[3]["query"]["bool"]["filter"] == [{"term": {"payload.year": {"value": 2010}}}]
    expected = brute_force(queries[0].sparse)[:2]
    assert [h.id for h in results[0].hits] == [i for i, _ in expected]
    assert [h.score for h in results[0].hits] == pytest.approx([s for _, s in expected], rel=1e-6)
    assert [h.id for h in results[1].hits] == ["d4"]
    assert results[0].notes == []


def test_query_weights_above_64_are_rescaled_with_a_note(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS)
    q = vec({"cat": 128.0, "u.s.": 10.0, "dog": 0.5})
    (res,) = conn.search([Query(sparse=q)])
    sent = engine.calls(r"/_msearch$")[0].lines()[1]["query"]["neural_sparse"]["sparse"]["query_tokens"]
    assert max(sent.values()) == 64.0 and all(0 < w <= 64 for w in sent.values())
    assert sent["u.s."] == pytest.approx(5.0)
    # Ranking unchanged and scores given back on the original scale.
    assert [h.id for h in res.hits] == [i for i, _ in brute_force(q)]
    assert [h.score for h in res.hits] == pytest.approx([s for _, s in brute_force(q)], rel=1e-6)
    assert len(res.notes) == 1 and "rescaled" in res.notes[0] and "0.5" in res.notes[0]
    validate_all(engine, validator)
    (plain,) = conn.search([Query(sparse=vec({"cat": 64.0}))])
    assert plain.notes == []


def test_seismic_sparse_vector_index(seismic, engine, validator):
    seismic.ensure_index(spec(options={"approximate_threshold": 5000, "n_postings": 100}))
    assert engine.calls(r"^/docs$", "PUT") == []  # created at the first write, ceilings fitted to it
    assert not seismic.write(DOCS).failed
    body = engine.calls(r"^/docs$", "PUT")[0].json()
    assert body["settings"] == {"index": {"sparse": True}}
    assert body["mappings"]["properties"]["sparse"] == {
        "type": "sparse_vector",
        "method": {
            "name": "seismic",
            "parameters": {
                "n_postings": 100,
                "cluster_ratio": 0.1,
                "summary_prune_ratio": 0.4,
                "approximate_threshold": 5000,
                "quantization_ceiling_ingest": 2.4,  # largest weight 2.0, +20%
                "quantization_ceiling_search": 16.0,
            },
        },
    }
    lines = engine.calls(r"/_bulk$")[0].lines()
    assert lines[1]["sparse"] == {"1057": 0.2, "2938": 0.5, "4937": 1.5}  # token ids as strings
    q = vec({"cat": 1.0, "mat": 2.0})
    res = seismic.search(
        [Query(sparse=q), Query(sparse=q, filter={"lang": "fr"})],
        SearchOptions(top_k=3, backend_options={"heap_factor": 1.2}),
    )
    search_lines = engine.calls(r"/_msearch$")[0].lines()
    inner = search_lines[1]["query"]["neural_sparse"]["sparse"]
    assert inner["query_tokens"] == {"4937": 1.0, "13523": 2.0}
    assert inner["method_parameters"] == {"top_n": 2, "k": 3, "heap_factor": 1.2}
    filtered = search_lines[3]["query"]["neural_sparse"]["sparse"]["method_parameters"]["filter"]
    assert filtered == {"bool": {"filter": [{"term": {"payload.lang": {"value": "fr"}}}]}}
    assert [h.id for h in res[0].hits] == [i for i, _ in brute_force(q)[:3]]
    assert [h.id for h in res[1].hits] == ["d3"]
    validate_all(engine, validator)


def test_seismic_parameters_are_checked():
    with pytest.raises(ValueError, match="cluster_ratio must be a number in"):
        OpenSearchConnector(sparse_field_type="sparse_vector", cluster_ratio=1.5)
    with pytest.raises(ValueError, match="n_postings must be an integer"):
        OpenSearchConnector(sparse_field_type="sparse_vector", n_postings=0)
    with pytest.raises(ValueError, match="sparse_field_type must be"):
        OpenSearchConnector(sparse_field_type="sparse")


def test_seismic_search_options_need_a_seismic_field(conn):
    conn.ensure_index(spec())
    with pytest.raises(ValueError, match="SEISMIC sparse_vector fields only"):
        conn.search([Query(sparse=vec({"cat": 1.0}))], SearchOptions(backend_options={"top_n": 3}))


def test_seismic_needs_opensearch_3_3():
    with FakeServer(FakeEngine(flavor="opensearch", version="3.2.0")) as srv:
        seismic = OpenSearchConnector(url=srv.url, sparse_field_type="sparse_vector")
        with pytest.raises(ConnectorError, match=r"no SEISMIC sparse_vector field \(3\.3\+\)"):
            seismic.ensure_index(spec())
        OpenSearchConnector(url=srv.url).ensure_index(spec())  # rank_features works there


@pytest.mark.parametrize("version", ["2.13.0", "1.3.19"])
def test_old_opensearch_is_refused(version):
    with (
        FakeServer(FakeEngine(flavor="opensearch", version=version)) as srv,
        pytest.raises(ConnectorError, match=r"too old.*2\.14 or later"),
    ):
        OpenSearchConnector(url=srv.url).ensure_index(spec())


def test_missing_neural_search_plugin_is_refused():
    with (
        FakeServer(FakeEngine(flavor="opensearch", version="3.3.0", plugins=("opensearch-knn",))) as srv,
        pytest.raises(ConnectorError, match="no neural-search plugin"),
    ):
        OpenSearchConnector(url=srv.url).ensure_index(spec())


def test_elasticsearch_server_is_refused():
    with (
        FakeServer(FakeEngine(flavor="elasticsearch", version="9.1.0")) as srv,
        pytest.raises(ConnectorError, match="not OpenSearch"),
    ):
        OpenSearchConnector(url=srv.url).ensure_index(spec())


def test_api_key_is_refused_with_advice():
    with pytest.raises(ValueError, match="no API keys"):
        OpenSearchConnector(api_key="abc")


@pytest.mark.parametrize(
    "mappings, needle",
    [
        ({"properties": {"sparse": {"type": "sparse_vector"}}}, "is of type 'sparse_vector'"),
        ({"properties": {"sparse": {"type": "float"}}}, "is of type 'float'"),
        (
            {"properties": {"sparse": {"type": "rank_features"}, "dense": {"type": "knn_vector", "dimension": 8}}},
            "has 8 dimensions",
        ),
    ],
)
def test_existing_index_with_another_mapping_is_refused(conn, engine, mappings, needle):
    engine.add_index("docs", mappings)
    with pytest.raises(IndexMismatchError) as err:
        conn.ensure_index(spec(dense_field="dense", dense_size=4))
    assert needle in str(err.value) and "drop the index" in str(err.value)
    assert not engine.calls(r"/_bulk$")


def test_vocabulary_mismatch_is_refused(conn):
    conn.ensure_index(spec())
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        OpenSearchConnector(url=conn.url).ensure_index(spec(metadata={**META, "vocab_size": 999}))


def test_count_get_delete_drop(conn):
    conn.ensure_index(spec())
    conn.write(DOCS)
    assert conn.count() == 4
    assert conn.get(["d3"]) == {"d3": {"lang": "fr", "year": 2001, "text": "u.s. mat"}}
    conn.delete(["d3", "missing"])
    assert conn.count() == 3
    conn.drop()
    assert conn.count() == 0 and conn.index_metadata() is None


# --- the validator can fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, name",
    [
        ({"neural_sparse": {"sparse": {"query_tokens": {"cat": "high"}}}}, "_common.query_dsl:QueryContainer"),
        ({"neural_sparse": {"sparse": {"query_tokens": ["cat"]}}}, "_common.query_dsl:QueryContainer"),
        (
            {"neural_sparse": {"sparse": {"query_tokens": {"1": 1.0}, "method_parameters": {"k": 0}}}},
            "_common.query_dsl:QueryContainer",
        ),
        (
            {"neural_sparse": {"sparse": {"query_tokens": {"1": 1.0}, "method_parameters": {"topn": 3}}}},
            "_common.query_dsl:QueryContainer",
        ),
        ({"mappings": {"properties": {"sparse": {"type": "rank_feature_s"}}}}, "request:indices/indices.create"),
        (
            {"mappings": {"properties": {"s": {"type": "sparse_vector", "method": {"name": "hnsw"}}}}},
            "request:indices/indices.create",
        ),
        (
            {
                "mappings": {
                    "properties": {
                        "s": {
                            "type": "sparse_vector",
                            "method": {"name": "seismic", "parameters": {"cluster_ratio": 2}},
                        }
                    }
                }
            },
            "request:indices/indices.create",
        ),
        ({"mappings": {"properties": {"d": {"type": "knn_vector"}}}}, "request:indices/indices.create"),
        ({"settings": {"index": {"sparse": "yes"}}}, "request:indices/indices.create"),
        ({"index": {"_id": "1"}, "create": {"_id": "1"}}, "_core.bulk:OperationContainer"),
        ({"size": "ten"}, "_core.msearch:MultisearchBody"),
        ({"index": {"a": 1}}, "_core.msearch:MultisearchHeader"),
    ],
)
def test_validator_rejects_wrong_bodies(validator, body, name):
    with pytest.raises(SpecViolation):
        validator.validate(body, name)
