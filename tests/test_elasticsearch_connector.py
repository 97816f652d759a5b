"""The ``elasticsearch`` connector against the official Elasticsearch API specification.

No Elasticsearch can run here, so the real ``elasticsearch`` client talks over HTTP to a local stand-in
server on 127.0.0.1 (``http.server`` in a thread, see ``lucene_testkit.py``) that answers as the
engine documents and records every request. Every body the client sent — index creation, mapping
updates, each bulk action and source line, each msearch header/body pair, mget — is validated against
``shared/specs/elasticsearch`` (serverless OpenAPI plus the TypeScript stack spec, see
``spec_validation.py``); the negative tests show the validator does reject wrong bodies.
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
from sparsebridge_elasticsearch import ElasticsearchConnector, escape_token, unescape_token
from spec_validation import SpecViolation, elasticsearch_validator

VOCAB = ["the", "cat", "sat", "u.s.", "mat", "dog", "##s", "a.b%c"]
META = {"model": "splade-tiny", "vocab_size": 30522, "vocab_fingerprint": "f00d"}


def vec(weights: dict[str, float]) -> SparseVector:
    return SparseVector.from_pairs((VOCAB.index(t), t, w) for t, w in weights.items())


DOCS = [
    Record("d1", "the cat sat", vec({"cat": 1.5, "sat": 0.5, "u.s.": 0.2}), {"lang": "en", "year": 2001}),
    Record("d2", "the dog", vec({"dog": 2.0, "the": 0.1, "a.b%c": 0.7}), {"lang": "en", "year": 1999}),
    Record("d3", "u.s. mat", vec({"u.s.": 1.2, "mat": 0.9}), {"lang": "fr", "year": 2001, "extra": [1, 2]}),
    Record("d4", "cats", vec({"cat": 0.4, "##s": 0.3}), {"lang": "de", "year": 2010}),
]


def spec(**kw) -> IndexSpec:
    base = dict(
        name="docs",
        payload_fields={"lang": "keyword", "year": "integer"},
        metadata=META,
    )
    base.update(kw)
    return IndexSpec(**base)


def brute_force(query: SparseVector, docs=DOCS) -> list[tuple[str, float]]:
    """Exact ranking over the weights Lucene stores (a FeatureField keeps 9 significant bits)."""
    q = query.as_token_dict()
    scored = [
        (d.id, sum(lucene_feature_value(w) * q.get(t, 0.0) for t, w in d.sparse.as_token_dict().items())) for d in docs
    ]
    return sorted([s for s in scored if s[1] > 0], key=lambda s: (-s[1], s[0]))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(flavor="elasticsearch", version="9.1.0")


@pytest.fixture
def server(engine):
    with FakeServer(engine) as srv:
        yield srv


@pytest.fixture
def conn(server):
    c = ElasticsearchConnector(url=server.url, initial_backoff=0.001, max_backoff=0.002)
    yield c
    c.close()


@pytest.fixture(scope="module")
def validator(specs_dir):
    return elasticsearch_validator(specs_dir)


def validate_all(engine: FakeEngine, validator) -> dict[str, int]:
    """Validate every request body the client sent; returns how many requests per API."""
    seen: dict[str, int] = {}
    for req in engine.requests:
        api = validator.validate_request(req.method, req.path, req.body)
        seen[api] = seen.get(api, 0) + 1
    return seen


def test_registered_through_the_entry_point():
    assert get_connectors()["elasticsearch"] is ElasticsearchConnector


def test_create_index_body_matches_spec_and_mapping(conn, engine, validator):
    conn.ensure_index(spec(dense_field="dense", dense_size=3, options={"number_of_shards": 1}))
    (create,) = engine.calls(r"^/docs$", "PUT")
    validator.validate_request("PUT", create.path, create.body)
    body = create.json()
    props = body["mappings"]["properties"]
    assert props["sparse"] == {"type": "sparse_vector", "index_options": {"prune": False}}  # exact, explicitly
    assert props["text"] == {"type": "text"}
    assert props["payload"]["properties"] == {"lang": {"type": "keyword"}, "year": {"type": "integer"}}
    assert props["dense"] == {"type": "dense_vector", "dims": 3, "index": True, "similarity": "cosine"}
    assert body["settings"] == {"number_of_shards": 1}
    assert {k: body["mappings"]["_meta"][k] for k in META} == META
    assert conn.index_metadata() == META


def test_every_request_body_validates_against_the_spec(conn, engine, validator):
    conn.ensure_index(spec())
    result = conn.write(DOCS)
    assert sorted(result.written) == ["d1", "d2", "d3", "d4"] and not result.failed
    conn.search([Query(sparse=vec({"cat": 1.0})), Query(sparse=vec({"dog": 1.0}), filter={"lang": "en"})])
    conn.get(["d1", "nope"])
    conn.delete(["d4"])
    conn.ensure_index(spec(payload_fields={"lang": "keyword", "year": "integer", "score": "float"}))
    seen = validate_all(engine, validator)
    for api in ("request:indices.create", "bulk", "msearch", "request:mget", "request:indices.put_mapping"):
        assert seen.get(api), f"no {api} request was validated: {seen}"


def test_bulk_lines_carry_tokens_weights_text_and_payload(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS[:2])
    (bulk,) = engine.calls(r"/_bulk$")
    lines = bulk.lines()
    assert validator.validate_bulk(lines) == 2
    assert lines[0] == {"index": {"_index": "docs", "_id": "d1"}}
    assert lines[1] == {
        "text": "the cat sat",
        "sparse": {"cat": 1.5, "sat": 0.5, "u.s.": 0.2},
        "payload": {"lang": "en", "year": 2001},
    }
    assert all(w > 0 for line in lines[1::2] for w in line["sparse"].values())


def test_batch_of_queries_is_one_msearch_with_exact_sparse_vector_queries(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS)
    queries = [
        Query(sparse=vec({"cat": 1.0, "u.s.": 2.0})),
        Query(sparse=vec({"dog": 0.5}), filter={"lang": ["en", "fr"], "year": 1999}),
        Query(sparse=vec({"mat": 1.0, "cat": 0.1})),
    ]
    results = conn.search(queries, SearchOptions(top_k=3))
    (msearch,) = engine.calls(r"/_msearch$")
    lines = msearch.lines()
    assert validator.validate_msearch(lines) == 3
    first = lines[1]
    assert first["size"] == 3
    assert first["query"] == {
        "sparse_vector": {"field": "sparse", "query_vector": {"cat": 1.0, "u.s.": 2.0}, "prune": False}
    }
    assert lines[3]["query"]["bool"]["filter"] == [
        {"terms": {"payload.lang": ["en", "fr"]}},
        {"term": {"payload.year": {"value": 1999}}},
    ]
    for q, res in zip(queries, results):
        expected = brute_force(q.sparse)
        if q.filter:
            expected = [e for e in expected if e[0] == "d2"]
        assert [h.id for h in res.hits] == [i for i, _ in expected[:3]]
        assert [h.score for h in res.hits] == pytest.approx([s for _, s in expected[:3]], rel=1e-6)
    assert results[0].hits[0].payload["text"] == "u.s. mat"


def test_pruning_is_an_option(conn, engine, validator):
    conn.ensure_index(spec())
    conn.write(DOCS)
    cfg = {"tokens_freq_ratio_threshold": 5, "tokens_weight_threshold": 0.4}
    conn.search([Query(sparse=vec({"cat": 1.0}))], SearchOptions(backend_options={"pruning_config": cfg}))
    conn.search([Query(sparse=vec({"cat": 1.0}))], SearchOptions(backend_options={"prune": True}))
    bodies = [r.lines()[1]["query"]["sparse_vector"] for r in engine.calls(r"/_msearch$")]
    assert bodies[0]["prune"] is True and bodies[0]["pruning_config"] == cfg
    assert bodies[1]["prune"] is True and "pruning_config" not in bodies[1]
    validate_all(engine, validator)
    with pytest.raises(ValueError, match="unknown elasticsearch search option"):
        conn.search([Query(sparse=vec({"cat": 1.0}))], SearchOptions(backend_options={"prnue": True}))


def test_payload_can_be_left_out_and_empty_query_gives_no_hits(conn, engine):
    conn.ensure_index(spec())
    conn.write(DOCS)
    res = conn.search(
        [Query(sparse=vec({"cat": 1.0})), Query(sparse=SparseVector((), (), ()))],
        SearchOptions(with_payload=False),
    )
    assert res[0].hits and all(h.payload == {} for h in res[0].hits)
    assert res[1].hits == [] and "empty" in res[1].notes[0]
    assert engine.calls(r"/_msearch$")[0].lines()[1]["_source"] is False


def test_dense_only_query_is_a_knn_search_and_hybrid_goes_to_the_rrf_retriever(conn, engine, validator):
    conn.ensure_index(spec(dense_field="dense", dense_size=2))
    conn.write(
        [Record("x", "t", vec({"cat": 1.0}), {}, [0.1, 0.2]), Record("y", "t", vec({"dog": 1.0}), {}, [0.2, 0.1])]
    )
    (dense,) = conn.search([Query(dense=[0.1, 0.2])])
    assert [h.id for h in dense.hits] == ["x", "y"]
    assert dense.hits[0].score == pytest.approx(1.0)  # cosine 1 -> (1 + 1) / 2
    (res,) = conn.search([Query(sparse=vec({"cat": 1.0}), dense=[0.1, 0.2])])
    assert [h.id for h in res.hits] == ["x", "y"] and res.notes == []
    # x: rank 1 in both legs; y: rank 2 in the dense leg only.
    assert [h.score for h in res.hits] == pytest.approx([2 / 61, 1 / 62])
    lines = [r.lines() for r in engine.calls(r"/_msearch$")]
    body = lines[-1][1]
    assert set(body["retriever"]["rrf"]) == {"retrievers", "rank_constant", "rank_window_size"}
    for req in engine.calls(r"/_msearch$"):
        validator.validate_request(req.method, req.path, req.body)


@pytest.mark.parametrize("version", ["8.11.0", "8.13.4", "8.14.3"])
def test_clusters_before_8_15_get_escaped_keys_and_a_term_query(version, validator):
    engine = FakeEngine(version=version)
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(spec())
        result = conn.write(DOCS)
        assert not result.failed, result.failed  # the fake, like 8.11-8.15, refuses dots in keys
        (res,) = conn.search([Query(sparse=vec({"u.s.": 1.0, "a.b%c": 2.0}), filter={"lang": "en"})])
        assert [h.id for h in res.hits] == ["d2", "d1"]
        expected = [2.0 * lucene_feature_value(0.7), 1.0 * lucene_feature_value(0.2)]
        assert [h.score for h in res.hits] == pytest.approx(expected, rel=1e-6)
        # The 9.x client's compatible-with=9 headers were rewritten for the 8.x server.
        assert all("compatible-with=9" not in r.headers.get("accept", "") for r in engine.requests)
        create = engine.calls(r"^/docs$", "PUT")[0].json()
        assert create["mappings"]["_meta"]["sparsebridge"]["sparse_keys"] == "token-dot-escaped"
        bulk = engine.calls(r"/_bulk$")[0].lines()
        assert bulk[1]["sparse"] == {"cat": 1.5, "sat": 0.5, "u%2Es%2E": 0.2}
        query = engine.calls(r"/_msearch$")[0].lines()[1]["query"]
        should = query["bool"]["must"][0]["bool"]["should"]
        assert {"term": {"sparse": {"value": "a%2Eb%25c", "boost": 2.0}}} in should
        validate_all(engine, validator)


def test_escaping_is_reversible():
    for token in ["u.s.", "a.b%c", "%2E", "..", "plain", "%", "x%2Ey"]:
        assert unescape_token(escape_token(token)) == token
        assert "." not in escape_token(token)
    assert len({escape_token(t) for t in ["%2E", ".", "%252E"]}) == 3


def test_8_15_cluster_uses_the_sparse_vector_query_but_escapes_keys():
    engine = FakeEngine(version="8.15.2")
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(spec())
        assert not conn.write(DOCS).failed
        (res,) = conn.search([Query(sparse=vec({"u.s.": 1.0}))])
        assert [h.id for h in res.hits] == ["d3", "d1"]
        q = engine.calls(r"/_msearch$")[0].lines()[1]["query"]
        assert q["sparse_vector"]["query_vector"] == {"u%2Es%2E": 1.0}


def test_index_created_escaped_keeps_escaping_after_an_upgrade():
    engine = FakeEngine(version="8.12.0")
    with FakeServer(engine) as srv:
        with ElasticsearchConnector(url=srv.url) as conn:
            conn.ensure_index(spec())
            conn.write(DOCS)
        engine.version = "9.0.0"
        with ElasticsearchConnector(url=srv.url, index="docs") as conn:  # no ensure_index: reads _meta
            (res,) = conn.search([Query(sparse=vec({"a.b%c": 1.0}))])
            assert [h.id for h in res.hits] == ["d2"]


@pytest.mark.parametrize("version", ["8.10.4", "7.17.9"])
def test_clusters_before_8_11_are_refused(version):
    with FakeServer(FakeEngine(version=version)) as srv:
        conn = ElasticsearchConnector(url=srv.url)
        with pytest.raises(ConnectorError, match=r"too old.*8\.11 or later"):
            conn.ensure_index(spec())


def test_opensearch_server_is_refused():
    with (
        FakeServer(FakeEngine(flavor="opensearch", version="3.3.0")) as srv,
        pytest.raises(ConnectorError, match="does not identify itself as Elasticsearch"),
    ):
        ElasticsearchConnector(url=srv.url).ensure_index(spec())


def test_existing_index_is_checked_not_recreated(conn, engine):
    conn.ensure_index(spec())
    conn.write(DOCS)
    conn2 = ElasticsearchConnector(url=conn.url)
    conn2.ensure_index(spec())
    assert len(engine.calls(r"^/docs$", "PUT")) == 1
    assert conn2.count() == 4


@pytest.mark.parametrize(
    "mappings, needle",
    [
        ({"properties": {"sparse": {"type": "rank_features"}}}, "is of type 'rank_features'"),
        ({"properties": {"text": {"type": "text"}}}, "has no field 'sparse'"),
        (
            {"properties": {"sparse": {"type": "sparse_vector"}, "dense": {"type": "dense_vector", "dims": 5}}},
            "has 5 dimensions",
        ),
        (
            {
                "properties": {
                    "sparse": {"type": "sparse_vector"},
                    "dense": {"type": "dense_vector", "dims": 3},
                    "payload": {"properties": {"lang": {"type": "text"}}},
                }
            },
            "payload field 'lang' is mapped as 'text'",
        ),
    ],
)
def test_existing_index_with_another_mapping_is_refused_with_the_fix(conn, engine, mappings, needle):
    engine.add_index("docs", mappings)
    with pytest.raises(IndexMismatchError) as err:
        conn.ensure_index(spec(dense_field="dense", dense_size=3))
    assert needle in str(err.value)
    assert "drop the index" in str(err.value) or "change IndexSpec" in str(err.value)
    assert not engine.calls(r"/_bulk$")


def test_existing_index_with_another_vocabulary_is_refused(conn):
    conn.ensure_index(spec())
    other = ElasticsearchConnector(url=conn.url)
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        other.ensure_index(spec(metadata={**META, "vocab_fingerprint": "beef"}))


def test_count_get_delete_drop(conn):
    assert conn.count() == 0 and conn.index_metadata() is None
    conn.ensure_index(spec())
    conn.write(DOCS + [Record("d1", "again", vec({"mat": 1.0}), {"lang": "en"})])
    assert conn.count() == 4
    assert conn.get(["d1", "zz"]) == {"d1": {"lang": "en", "text": "again"}}
    conn.delete(["d1", "d2", "never-there"])
    assert conn.count() == 2
    conn.drop()
    conn.drop()
    assert conn.count() == 0 and conn.index_metadata() is None


def test_needs_an_index_before_writing(conn):
    with pytest.raises(ConnectorError, match="no Elasticsearch index selected"):
        conn.write(DOCS)


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown elasticsearch connector option"):
        ElasticsearchConnector(url="http://localhost:9200", pasword="x")
    with pytest.raises(ConnectorError, match="one kind of credentials"):
        ElasticsearchConnector(api_key="k", username="u", password="p")
    with pytest.raises(ValueError, match="refresh"):
        ElasticsearchConnector(refresh="sometimes")
    with pytest.raises(ValueError, match="not allowed"):
        ElasticsearchConnector().create_body(IndexSpec("x", sparse_field="payload"))


def test_refresh_wait_for_goes_to_each_bulk_request(server, engine):
    with ElasticsearchConnector(url=server.url, refresh="wait_for") as conn:
        conn.ensure_index(spec())
        conn.write(DOCS)
    (bulk,) = engine.calls(r"/_bulk$")
    assert bulk.query.get("refresh") == ["wait_for"]
    assert not engine.calls(r"/_refresh$")


def test_parallel_bulk_with_threads(server, engine):
    with ElasticsearchConnector(url=server.url, thread_count=2, chunk_size=1) as conn:
        conn.ensure_index(spec())
        result = conn.write(DOCS)
    assert sorted(result.written) == ["d1", "d2", "d3", "d4"]
    assert len(engine.calls(r"/_bulk$")) == 4


# --- the validator can fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, name",
    [
        ({"sparse_vector": {"query_vector": {"cat": 1.0}}}, "_types.query_dsl.QueryContainer"),  # no field
        ({"sparse_vector": {"field": "s", "query_vector": {"cat": "high"}}}, "_types.query_dsl.QueryContainer"),
        (
            {"sparse_vector": {"field": "s", "query_vector": {"cat": 1.0}, "inference_id": "elser"}},
            "_types.query_dsl.QueryContainer",
        ),  # both query_vector and inference_id
        ({"sparse_vector": {"field": "s", "query_vector": {"a": 1}, "prune": "no"}}, "_types.query_dsl.QueryContainer"),
        ({"term": {"payload.lang": {"boost": 2}}}, "_types.query_dsl.QueryContainer"),  # no value
        ({"mappings": {"properties": {"sparse": {"type": "sparse_vectors"}}}}, "request:indices.create"),
        ({"mappings": {"properties": {"d": {"type": "dense_vector", "dims": "3"}}}}, "request:indices.create"),
        ({"mappings": {"dynamic": "maybe"}}, "request:indices.create"),
        ({"settings": {"number_of_shards": [1]}}, "request:indices.create"),
        ({"index": {"_id": "1"}, "delete": {"_id": "2"}}, "_global.bulk.OperationContainer"),
        ({"index": {"_id": 1.5}}, "_global.bulk.OperationContainer"),
        ({"size": "ten"}, "_global.search._types.SearchRequestBody"),
        ({"index": 7}, "_global.msearch.MultisearchHeader"),
    ],
)
def test_validator_rejects_wrong_bodies(validator, body, name):
    with pytest.raises(SpecViolation):
        validator.validate(body, name)


def test_validator_rejects_a_bulk_action_without_source_and_odd_msearch(validator):
    with pytest.raises(SpecViolation):
        validator.validate_request("POST", "/_bulk", b'{"index":{"_id":"1"}}\n')
    with pytest.raises(SpecViolation):
        validator.validate_request("POST", "/_msearch", b'{"index":"x"}\n')
    with pytest.raises(SpecViolation):
        validator.validate_request("POST", "/docs/_unknown_api", b"{}")
