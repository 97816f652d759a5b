"""The engine double (``lucene_testkit.FakeEngine``) held to the engines' own tests and documents.

No Elasticsearch or OpenSearch can run here, so the connectors' offline tests run against a double;
these tests make it answer as the engines do. Each test replays what one of the engines' own test
suites or reference documents asserts (requests, documents and expected answers), cited in a
comment, against the double's HTTP handler, and every answer is also checked against the official
response schemas (``spec_validation.py``). Facts, not code: nothing here is copied from those
projects; the documents and numbers are the ones their tests use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from lucene_testkit import FakeEngine, lucene_feature_value
from spec_validation import elasticsearch_validator, opensearch_validator


def call(engine: FakeEngine, method: str, path: str, body=None, lines=None) -> tuple[int, dict]:
    """One request through the double's HTTP handler (JSON body or NDJSON lines)."""
    if lines is not None:
        raw = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    else:
        raw = b"" if body is None else json.dumps(body).encode()
    status, _, payload = engine.handle(method, path, {"content-type": "application/json"}, raw)
    return status, payload


def search(engine: FakeEngine, index: str, body: dict) -> dict:
    """One search, through ``_msearch`` (the only search API the connectors use)."""
    status, payload = call(engine, "POST", "/_msearch", lines=[{"index": index}, body])
    assert status == 200
    return payload["responses"][0]


@pytest.fixture
def checked(specs_dir):
    """Engines whose every answer must match the specification's response schema."""
    made: list[FakeEngine] = []

    def make(**kw) -> FakeEngine:
        made.append(FakeEngine(**kw))
        return made[-1]

    yield make
    for engine in made:
        v = elasticsearch_validator(specs_dir) if engine.is_es else opensearch_validator(specs_dir)
        for r in engine.requests:
            v.validate_response(r.method, r.path, r.status, r.response)


def ids(result: dict) -> list[str]:
    """The hit ids of a search answer, in rank order."""
    return [h["_id"] for h in result["hits"]["hits"]]


# --- Lucene's FeatureField -----------------------------------------------------------------------


def test_feature_values_keep_nine_significant_bits():
    # Elasticsearch "Sparse vector field type" (8.11 reference): "sparse_vector fields only preserve
    # 9 significant bits for the precision, which translates to a relative error of about 0.4%."
    # Lucene FeatureField truncates (float bits >> 15): 0.2 = 0x3E4CCCCD keeps 0x3E4C8000, that is
    # (1 + 0x4C8000 / 2**23) / 8 = 0.19970703125.
    assert lucene_feature_value(0.2) == 0.19970703125
    for w in (2.0, 3.0, 0.5, 2.5, 1.0):  # exactly representable in 9 bits: unchanged
        assert lucene_feature_value(w) == w
    for w in (0.1, 1.1652642, 2.4797723, 123.456, 1e-20):
        kept = lucene_feature_value(w)
        assert kept <= w and (w - kept) / w < 2**-8


# --- Elasticsearch: rest-api-spec/.../test/search.vectors/90_sparse_vector.yml --------------------

RUNNING = {
    "running": 2.4097164,
    "good": 2.170997,
    "run": 2.052153,
    "race": 1.4575411,
    "for": 1.1908325,
    "runner": 1.1803857,
    "exercise": 1.1652642,
    "you": 0.9654308,
    "training": 0.94999343,
    "sports": 0.93650943,
    "fitness": 0.83129317,
    "best": 0.820365,
    "bad": 0.7385934,
    "health": 0.7098149,
    "marathon": 0.61555296,
    "gym": 0.5652374,
}
WALKING = {
    "walking": 2.4797723,
    "exercise": 2.074234,
    "healthy": 1.971596,
    "walk": 1.6458614,
    "health": 1.5291847,
    "walker": 1.4736869,
    "activity": 1.0793462,
    "good": 1.0597849,
    "fitness": 0.91855437,
    "training": 0.86342937,
    "movement": 0.7657065,
    "normal": 0.6694081,
    "foot": 0.5892523,
    "physical": 0.4926789,
}
TERMS = {
    "bool": {
        "should": [
            {"term": {"ml.tokens": {"value": "walk", "boost": 1.9790847}}},
            {"term": {"ml.tokens": {"value": "walking", "boost": 1.7092685}}},
            {"term": {"ml.tokens": {"value": "exercise", "boost": 0.84076905}}},
        ]
    }
}
ML_MAPPINGS = {"properties": {"text": {"type": "text"}, "ml.tokens": {"type": "sparse_vector"}}}


def _index_running_walking(engine: FakeEngine, running) -> None:
    assert call(engine, "PUT", "/test", {"mappings": ML_MAPPINGS})[0] == 200
    lines = [
        {"index": {"_id": "1"}},
        {"text": "running is good for you", "ml": {"tokens": running}},
        {"index": {"_id": "2"}},
        {"text": "walking is a healthy exercise", "ml": {"tokens": WALKING}},
        {"index": {"_id": "3"}},
        {"text": "empty array", "ml": {"tokens": []}},
        {"index": {"_id": "4"}},
        {"text": "empty object", "ml": {"tokens": {}}},
    ]
    status, bulk = call(engine, "POST", "/test/_bulk", lines=lines)
    assert status == 200 and not bulk["errors"], bulk
    assert [next(iter(i.values()))["result"] for i in bulk["items"]] == ["created"] * 4


def test_term_queries_on_a_sparse_vector_field_score_weight_times_boost(checked):
    # 90_sparse_vector.yml, "Indexing and searching sparse vectors in >=8.11": hits.total 2, doc 2
    # first, doc 1 second; empty [] and {} token maps are indexed.
    engine = checked(flavor="elasticsearch", version="8.14.3")
    _index_running_walking(engine, RUNNING)
    result = search(engine, "test", {"query": TERMS})
    assert result["hits"]["total"]["value"] == 2 and ids(result) == ["2", "1"]
    # "close_to: hits.hits.1._score 0.9797 (error 0.01)": exercise 1.1652642 x boost 0.84076905.
    assert result["hits"]["hits"][1]["_score"] == pytest.approx(0.9797, abs=0.01)


def test_multi_valued_sparse_vectors_keep_the_strongest_weight(checked):
    # 90_sparse_vector.yml, "Indexing and searching multi-value sparse vectors in >=8.15": doc 1 as
    # two objects; the same term query gives doc 2 then doc 1 with 0.9797 +- 0.01. Reference
    # ("Multi-value sparse vectors"): "the max value for similarly named features is selected".
    engine = checked(flavor="elasticsearch", version="9.1.0")
    low = {t: 0.1 for t in RUNNING}
    first = {**RUNNING, "race": 0.1, "exercise": 0.1, "bad": 0.1, "health": 0.1}
    second = {**low, **{t: RUNNING[t] for t in ("race", "exercise", "bad", "health")}}
    _index_running_walking(engine, [first, second])
    result = search(engine, "test", {"query": TERMS})
    assert ids(result) == ["2", "1"]
    assert result["hits"]["hits"][1]["_score"] == pytest.approx(0.9797, abs=0.01)


def test_before_8_15_a_sparse_vector_takes_one_object(checked):
    # Reference 8.11 ("Sparse vector field type"): "sparse_vector fields only support single-valued
    # fields [...]. Multi-valued fields and negative values will be rejected."
    engine = checked(flavor="elasticsearch", version="8.11.0")
    call(engine, "PUT", "/test", {"mappings": ML_MAPPINGS})
    lines = [{"index": {"_id": "m"}}, {"ml.tokens": [{"a": 1.0}]}, {"index": {"_id": "n"}}, {"ml.tokens": {"a": -1.0}}]
    _, bulk = call(engine, "POST", "/test/_bulk", lines=lines)
    assert bulk["errors"] and [i["index"]["status"] for i in bulk["items"]] == [400, 400]


def test_sparse_vector_fields_do_not_exist_before_8_11(checked):
    # 90_sparse_vector.yml, "Sparse vector in 8.0.0 <= x < 8.11.0": catch /The \[sparse_vector\]
    # field type .* supported/ on index creation.
    engine = checked(flavor="elasticsearch", version="8.10.4")
    status, err = call(engine, "PUT", "/test", {"mappings": ML_MAPPINGS})
    assert status == 400
    assert "The [sparse_vector] field type" in err["error"]["reason"] and "supported" in err["error"]["reason"]


# --- Elasticsearch: x-pack/plugin/src/yamlRestTest/.../test/ml/sparse_vector_search.yml ----------

SIX = [
    ("1", "my words comforter", {"my": 0.5, "words": 1.0, "comforter": 2.0}),
    ("2", "the machine is leaking", {"the": 0.5, "machine": 1.0, "is": 0.5, "leaking": 1.0}),
    ("3", "these are my words", {"these": 0.5, "are": 0.5, "my": 0.5, "words": 1.0}),
    ("4", "the octopus comforter smells", {"the": 0.5, "octopus": 2.0, "comforter": 2.0, "smells": 1.0}),
    (
        "5",
        "the octopus comforter is leaking",
        {"the": 0.5, "octopus": 2.0, "comforter": 2.0, "is": 0.5, "leaking": 1.0},
    ),
    ("6", "washing machine smells", {"washing": 1.0, "machine": 1.0, "smells": 1.0}),
]
QUERY_VECTOR = {"the": 0.5, "comforter": 2.0, "smells": 1.0, "bad": 1.0}


@pytest.fixture
def six(checked) -> FakeEngine:
    engine = checked(flavor="elasticsearch", version="9.1.0")
    mappings = {"properties": {"source_text": {"type": "keyword"}, "ml.tokens": {"type": "sparse_vector"}}}
    call(engine, "PUT", "/index-with-sparse-vector", {"settings": {"number_of_shards": 1}, "mappings": mappings})
    lines = []
    for doc_id, text, tokens in SIX:
        lines += [{"index": {"_id": doc_id}}, {"source_text": text, "ml.tokens": tokens}]
    assert not call(engine, "POST", "/index-with-sparse-vector/_bulk", lines=lines)[1]["errors"]
    return engine


def _sv(**kw) -> dict:
    return {"query": {"sparse_vector": {"field": "ml.tokens", **kw}}}


def test_sparse_vector_query_with_a_query_vector(six):
    # "Test sparse_vector search with query vector": hits.total 5, first "the octopus comforter
    # smells", _score 5.25.
    result = search(six, "index-with-sparse-vector", _sv(query_vector=QUERY_VECTOR))
    assert result["hits"]["total"]["value"] == 5
    top = result["hits"]["hits"][0]
    assert top["_source"]["source_text"] == "the octopus comforter smells" and top["_score"] == 5.25


def test_token_pruning_drops_frequent_weak_tokens(six):
    # "... with query vector and pruning config": thresholds 1 / 0.9 -> hits.total 3, top _score 4.
    config = {"tokens_freq_ratio_threshold": 1, "tokens_weight_threshold": 0.9, "only_score_pruned_tokens": False}
    result = search(six, "index-with-sparse-vector", _sv(query_vector=QUERY_VECTOR, prune=True, pruning_config=config))
    assert result["hits"]["total"]["value"] == 3 and result["hits"]["hits"][0]["_score"] == 4
    # "... with only score pruned tokens": thresholds 1 / 0.4 -> hits.total 3, top _score 0.25.
    config = {"tokens_freq_ratio_threshold": 1, "tokens_weight_threshold": 0.4, "only_score_pruned_tokens": True}
    result = search(six, "index-with-sparse-vector", _sv(query_vector=QUERY_VECTOR, prune=True, pruning_config=config))
    assert result["hits"]["total"]["value"] == 3 and result["hits"]["hits"][0]["_score"] == 0.25
    # prune: false is exact whatever the field's defaults (the connectors send it explicitly).
    result = search(six, "index-with-sparse-vector", _sv(query_vector=QUERY_VECTOR, prune=False))
    assert result["hits"]["total"]["value"] == 5


def test_sparse_vector_query_boost_and_name(six):
    # "Test named, boosted sparse_vector search": boost 100 multiplies the score (5.0 -> 500.0) and
    # _name appears in matched_queries.
    plain = search(six, "index-with-sparse-vector", _sv(query_vector=QUERY_VECTOR))["hits"]["hits"][0]
    body = _sv(query_vector=QUERY_VECTOR, boost=100.0, _name="i-like-naming-my-queries")
    named = search(six, "index-with-sparse-vector", body)["hits"]["hits"][0]
    assert named["_score"] == pytest.approx(100 * plain["_score"]) and named["_id"] == plain["_id"]
    assert named["matched_queries"] == ["i-like-naming-my-queries"]


@pytest.mark.parametrize(
    "inner, message",
    [
        # "Test sparse_vector requires one of query or query_vector"
        ({"field": "text"}, "[sparse_vector] requires one of [query_vector] or [inference_id]"),
        # "Test sparse_vector only allows one of query or query_vector (note the error message is misleading)"
        (
            {"field": "text", "query": "octopus comforter smells", "query_vector": {"the": 1.0}},
            "[sparse_vector] requires one of [query_vector] or [inference_id]",
        ),
        # "Test sparse_vector displays error for invalid queried field type"
        (
            {"field": "source_text", "query_vector": {"the": 1.0}},
            "[source_text] must be type [sparse_vector] but is type [keyword]",
        ),
    ],
)
def test_sparse_vector_query_errors(six, inner, message):
    result = search(six, "index-with-sparse-vector", {"query": {"sparse_vector": inner}})
    assert result["status"] == 400 and message in result["error"]["reason"]


def test_dots_in_token_names_since_8_16(checked):
    # "Search on a sparse_vector field with dots in the field names": the token "5.0k" is indexed,
    # read back as sent, and found by a query_vector naming it (hits.total 1).
    engine = checked(flavor="elasticsearch", version="8.16.0")
    call(
        engine,
        "PUT",
        "/index-with-sparse-vector2",
        {"mappings": {"properties": {"ml.tokens": {"type": "sparse_vector"}}}},
    )
    tokens = {
        "running": 2.4097164,
        "good": 2.170997,
        "run": 2.052153,
        "race": 1.4575411,
        "for": 1.1908325,
        "5.0k": 2.489943,
    }
    lines = [{"index": {"_id": "has-dots"}}, {"ml": {"tokens": tokens}}]
    assert not call(engine, "POST", "/index-with-sparse-vector2/_bulk", lines=lines)[1]["errors"]
    _, got = call(engine, "POST", "/index-with-sparse-vector2/_mget", {"ids": ["has-dots"]})
    assert got["docs"][0]["_source"] == {"ml": {"tokens": tokens}}
    result = search(engine, "index-with-sparse-vector2", _sv(query_vector={"5.0k": 2.489943}))
    assert result["hits"]["total"]["value"] == 1


def test_sparse_vector_fields_whose_names_overlap(checked):
    # "Search on a nested sparse_vector field with dots in the field names and conflicting child
    # fields": parent (subobjects: false) holds parent.foo and parent.foo.bar.
    engine = checked(flavor="elasticsearch", version="8.16.0")
    props = {"foo": {"type": "sparse_vector"}, "foo.bar": {"type": "sparse_vector"}}
    call(
        engine,
        "PUT",
        "/idx3",
        {"mappings": {"properties": {"parent": {"type": "object", "subobjects": False, "properties": props}}}},
    )
    lines = [
        {"index": {"_id": "parent-foo"}},
        {"parent.foo": {"bar.baz": 1.0}},
        {"index": {"_id": "parent-foo-bar"}},
        {"parent.foo.bar": {"baz": 2.0}},
        {"index": {"_id": "both-docs"}},
        {"parent.foo": {"bar.baz": 3.0}, "parent.foo.bar": {"baz": 4.0}},
    ]
    assert not call(engine, "POST", "/idx3/_bulk", lines=lines)[1]["errors"]
    foo = search(
        engine, "idx3", {"query": {"sparse_vector": {"field": "parent.foo", "query_vector": {"bar.baz": 1.0}}}}
    )
    assert [(h["_id"], h["_score"]) for h in foo["hits"]["hits"]] == [("both-docs", 3.0), ("parent-foo", 1.0)]
    bar = search(
        engine, "idx3", {"query": {"sparse_vector": {"field": "parent.foo.bar", "query_vector": {"baz": 1.0}}}}
    )
    assert [(h["_id"], h["_score"]) for h in bar["hits"]["hits"]] == [("both-docs", 4.0), ("parent-foo-bar", 2.0)]


# --- Elasticsearch: the bulk API's own example (shared/specs/elasticsearch/ts/.../bulk/examples) ---


def test_bulk_example_answers_as_documented(checked, specs_dir):
    # BulkRequestExample1.yaml / BulkResponseExample1.yaml of the Elasticsearch specification: a
    # delete of a missing document is 404 "not_found" and leaves "errors" false; create is 201; the
    # update of a document written earlier in the same request is 200 "updated", version 2.
    examples = Path(specs_dir) / "elasticsearch/ts/specification/_global/bulk/examples"
    request = yaml.safe_load((examples / "request/BulkRequestExample1.yaml").read_text())["value"]
    expected = json.loads(yaml.safe_load((examples / "response/BulkResponseExample1.yaml").read_text())["value"])
    engine = checked(flavor="elasticsearch", version="9.1.0")
    call(engine, "PUT", "/test", {})
    lines = [json.loads(x) for x in request.splitlines() if x.strip()]
    status, answer = call(engine, "POST", "/_bulk", lines=lines)

    def facts(payload):
        return [(op, i["status"], i["result"], i["_version"]) for item in payload["items"] for op, i in item.items()]

    assert status == 200 and answer["errors"] is expected["errors"] is False
    assert facts(answer) == facts(expected)
    # The update API reference: "doc" is merged into the existing document.
    _, got = call(engine, "POST", "/test/_mget", {"ids": ["1"]})
    assert got["docs"][0]["_source"] == {"field1": "value1", "field2": "value2"}


# --- Elasticsearch 9.2+: vectors out of _source --------------------------------------------------
# rest-api-spec/.../test/search.vectors/250_source_synthetic_sparse_vectors.yml and
# 230_source_exclude_vectors.yml; changelog of elastic/elasticsearch#131907 ("Enable
# exclude_source_vectors by default for new indices ... Existing indices are not affected").

EMB_DOCS = [
    ("1", {"name": "cow.jpg", "emb": {"token_1": 2.0, "token_2": 3.0}}),
    (
        "2",
        {
            "name": "moose.jpg",
            "nested": [
                {"paragraph_id": 0, "emb": {"token_1": 2.0, "token_2": 3.0}},
                {"paragraph_id": 2, "emb": {"token_3": 2.0, "token_2": 3.0}},
                {"paragraph_id": 3, "emb": {"token_3": 2.0, "token_7": 3.0, "token_1": 4.0}},
            ],
        },
    ),
    ("3", {"name": "rabbit.jpg", "emb": {"token_3": 2.0, "token_9": 3.0, "token_2": 4.0}}),
    (
        "4",
        {
            "name": "zoolander.jpg",
            "nested": [
                {"paragraph_id": 0, "emb": {"token_3": 2.0, "token_7": 3.0, "token_1": 4.0}},
                {"paragraph_id": 1},
                {"paragraph_id": 2, "emb": {"token_8": 2.0}},
            ],
        },
    ),
]


def _emb_index(engine: FakeEngine, settings=None) -> None:
    nested = {"type": "nested", "properties": {"paragraph_id": {"type": "keyword"}, "emb": {"type": "sparse_vector"}}}
    mappings = {"properties": {"name": {"type": "keyword"}, "emb": {"type": "sparse_vector"}, "nested": nested}}
    call(engine, "PUT", "/test", {"mappings": mappings, **({"settings": settings} if settings else {})})
    lines = [x for doc_id, src in EMB_DOCS for x in ({"index": {"_id": doc_id}}, src)]
    assert not call(engine, "POST", "/test/_bulk", lines=lines)[1]["errors"]


def _sources(engine: FakeEngine, source=None) -> dict[str, dict]:
    body = {"query": {"match_all": {}}} if source is None else {"query": {"match_all": {}}, "_source": source}
    return {h["_id"]: h["_source"] for h in search(engine, "test", body)["hits"]["hits"] if "_source" in h}


def test_vectors_are_left_out_of_source_by_default(checked):
    # "exclude synthetic vectors": no emb at the top or in nested objects; the rest is there.
    engine = checked(flavor="elasticsearch", version="9.2.0")
    _emb_index(engine)
    got = _sources(engine)
    assert got["1"] == {"name": "cow.jpg"} and got["3"] == {"name": "rabbit.jpg"}
    assert got["2"]["nested"] == [{"paragraph_id": 0}, {"paragraph_id": 2}, {"paragraph_id": 3}]
    # "exclude vectors" (230_source_exclude_vectors.yml): exclude_vectors: true says the same.
    assert _sources(engine, {"exclude_vectors": True}) == got


def test_vectors_come_back_when_asked(checked):
    # "include synthetic vectors": exclude_vectors: false returns every emb (nested.0.emb of doc 4
    # has 3 tokens).
    engine = checked(flavor="elasticsearch", version="9.2.0")
    _emb_index(engine)
    got = _sources(engine, {"exclude_vectors": False})
    assert got == dict(EMB_DOCS)  # the weights of these documents are exact in 9 bits
    # "Bulk partial update with synthetic vectors": GET with _source_exclude_vectors=false
    # (the same fetch through mget's URL parameter).
    _, docs = call(engine, "POST", "/test/_mget?_source_exclude_vectors=false", {"ids": ["3"]})
    assert docs["docs"][0]["_source"]["emb"] == {"token_3": 2.0, "token_9": 3.0, "token_2": 4.0}
    _, docs = call(engine, "POST", "/test/_mget", {"ids": ["3"]})
    assert "emb" not in docs["docs"][0]["_source"]


def test_an_include_naming_the_vector_returns_it(checked):
    # "_source: {includes: nested.emb}": only nested.emb comes back, also with exclude_vectors: true;
    # documents without it get an empty _source, and nested objects left empty are dropped
    # (doc 4: nested of length 2).
    engine = checked(flavor="elasticsearch", version="9.2.0")
    _emb_index(engine)
    for source in ({"includes": "nested.emb"}, {"exclude_vectors": True, "includes": "nested.emb"}):
        got = _sources(engine, source)
        assert got["1"] == {} and got["3"] == {}
        assert [set(p) for p in got["2"]["nested"]] == [{"emb"}] * 3
        assert [len(p["emb"]) for p in got["4"]["nested"]] == [3, 1]
    # "excludes: nested*" wins over the include: every _source is empty.
    got = _sources(engine, {"exclude_vectors": True, "includes": "nested.emb", "excludes": "nested*"})
    assert all(src == {} for src in got.values())


def test_vectors_are_rebuilt_from_what_the_index_keeps(checked):
    # Derived from two documented facts: on 9.2+ the vector is not kept in _source but rebuilt from
    # the index (#131907), and the index keeps 9 significant bits of a sparse weight (reference).
    engine = checked(flavor="elasticsearch", version="9.2.0")
    call(engine, "PUT", "/v", {"mappings": {"properties": {"emb": {"type": "sparse_vector"}}}})
    call(engine, "POST", "/v/_bulk", lines=[{"index": {"_id": "a"}}, {"emb": {"x": 0.2}}])
    hit = search(engine, "v", {"_source": {"exclude_vectors": False}})["hits"]["hits"][0]
    assert hit["_source"]["emb"] == {"x": 0.19970703125}


def test_indices_created_before_9_2_keep_their_vectors(checked):
    # #131907: "Existing indices are not affected and continue to store vectors in _source".
    engine = checked(flavor="elasticsearch", version="9.1.0")
    _emb_index(engine)
    engine.version = "9.2.0"
    assert _sources(engine) == dict(EMB_DOCS)
    # And the setting turns it off for a new index: index.mapping.exclude_source_vectors: false.
    fresh = checked(flavor="elasticsearch", version="9.2.0")
    _emb_index(fresh, {"index.mapping.exclude_source_vectors": False})
    assert _sources(fresh) == dict(EMB_DOCS)


def test_source_filter_forms(checked):
    # The search API reference (_source: boolean, a wildcard pattern, an array of patterns, or an
    # object with includes/excludes); all the same filter.
    engine = checked(flavor="elasticsearch", version="9.1.0")
    _emb_index(engine)
    assert _sources(engine, False) == {}  # _source: false leaves it out of every hit
    assert _sources(engine, "na*")["1"] == {"name": "cow.jpg"}
    assert _sources(engine, ["name", "nested.paragraph_id"])["2"] == {
        "name": "moose.jpg",
        "nested": [{"paragraph_id": 0}, {"paragraph_id": 2}, {"paragraph_id": 3}],
    }
    assert _sources(engine, {"excludes": ["nested", "emb"]})["2"] == {"name": "moose.jpg"}
    assert _sources(engine, {"includes": ["*"], "excludes": ["*.emb", "emb"]})["4"]["nested"][0] == {"paragraph_id": 0}


# --- OpenSearch neural-search: src/test/java/org/opensearch/neuralsearch/query/NeuralSparseQueryIT.java
# (with BaseNeuralSearchIT.computeExpectedScore: sum of query weight x
# getFeatureFieldCompressedNumber(document weight), compared with a delta of 1e-5).

TOKENS = {"hello": 1.7352, "world": 0.20113, "a": 3.11, "b": 0.58, "c": 1.9e-3}
QUERY = {"hello": 2.25, "world": 0.4, "a": 1.3, "b": 0.07, "c": 5.0}


def _compressed(weight: float) -> float:
    """neural-search's getFeatureFieldCompressedNumber, written apart from the double's own helper
    (a mask on the float32 bits instead of a shift): the low 15 bits cleared."""
    bits = np.array([weight], dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF8000)
    return float(bits.view(np.float32)[0])


def _expected(doc: dict, query: dict) -> float:
    """neural-search's computeExpectedScore: sum of query weight x compressed document weight."""
    return sum(w * _compressed(doc[t]) for t, w in query.items() if t in doc)


@pytest.fixture
def neural(checked) -> FakeEngine:
    engine = checked(flavor="opensearch", version="3.3.0")
    props = {
        "test-sparse-encoding-1": {"type": "rank_features"},
        "test-sparse-encoding-2": {"type": "rank_features"},
        "test-text-field": {"type": "text"},
    }
    call(engine, "PUT", "/test-sparse", {"mappings": {"properties": props}})
    doc = {"test-sparse-encoding-1": TOKENS, "test-sparse-encoding-2": TOKENS, "test-text-field": "Hello world a b"}
    assert not call(engine, "POST", "/test-sparse/_bulk", lines=[{"index": {"_id": "1"}}, doc])[1]["errors"]
    return engine


def _ns(field: str, **inner) -> dict:
    return {"neural_sparse": {field: inner}}


def test_neural_sparse_query_tokens_score_with_boost(neural):
    # testBasicQueryUsingQueryTokens: query_tokens with boost 2 -> 2 x computeExpectedScore.
    result = search(neural, "test-sparse", {"query": _ns("test-sparse-encoding-1", query_tokens=QUERY, boost=2.0)})
    assert ids(result) == ["1"]
    assert result["hits"]["hits"][0]["_score"] == pytest.approx(2 * _expected(TOKENS, QUERY), abs=1e-5)


def test_neural_sparse_queries_on_two_fields_add_up(neural):
    # testBooleanQuery_withMultipleSparseEncodingQueries: bool should over two fields holding the
    # same weights -> 2 x computeExpectedScore.
    should = [_ns("test-sparse-encoding-1", query_tokens=QUERY), _ns("test-sparse-encoding-2", query_tokens=QUERY)]
    result = search(neural, "test-sparse", {"query": {"bool": {"should": should}}})
    assert result["hits"]["hits"][0]["_score"] == pytest.approx(2 * _expected(TOKENS, QUERY), abs=1e-5)


def test_neural_sparse_on_a_text_field_fails(neural):
    # testBasicQueryUsingQueryText_whenQueryWrongFieldType_thenFail: the search is refused.
    result = search(neural, "test-sparse", {"query": _ns("test-text-field", query_tokens=QUERY)})
    assert result["status"] == 400 and "error" in result


def test_seismic_sparse_vector_needs_index_sparse(checked):
    # OpenSearch "Sparse vector" field type (3.3): "To use sparse-vector field, you need to specify
    # the index setting index.sparse to be true"; token keys are integer ids.
    engine = checked(flavor="opensearch", version="3.3.0")
    field = {"type": "sparse_vector", "method": {"name": "seismic", "parameters": {"n_postings": 300}}}
    status, _ = call(engine, "PUT", "/sv", {"mappings": {"properties": {"sparse_embedding": field}}})
    assert status == 400
    body = {"settings": {"index": {"sparse": True}}, "mappings": {"properties": {"sparse_embedding": field}}}
    assert call(engine, "PUT", "/sv", body)[0] == 200
    lines = [
        {"index": {"_id": "1"}},
        {"sparse_embedding": {"1000": 0.1}},
        {"index": {"_id": "2"}},
        {"sparse_embedding": {"cat": 0.2}},
    ]
    _, bulk = call(engine, "POST", "/sv/_bulk", lines=lines)
    assert [i["index"]["status"] for i in bulk["items"]] == [201, 400]
